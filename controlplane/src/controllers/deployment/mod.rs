//! The Deployment controller.

pub mod model;
pub mod plan;
pub mod progress;
pub mod revisions;
pub mod rollout;
