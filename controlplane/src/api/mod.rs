//! The Kubernetes REST API: request parsing, the object registry, watch,
//! and the HTTP handlers that tie them together.

pub mod agentproxy;
pub mod errors;
pub mod handlers;
pub mod objects;
pub mod registry;
pub mod request;
pub mod resources;
pub mod strategy;
pub mod streaming;
pub mod watch;
