//! Skiff's control plane: a Kubernetes API server on an embedded store,
//! with the allocators and controllers that run beside it.

pub mod allocators;
pub mod api;
pub mod bootstrap;
pub mod controllers;
pub mod nodeapi;
pub mod pki;
pub mod scheduler;
pub mod server;
pub mod subnets;
