//! Controllers that run inside the control plane process.

pub mod deployment;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod replicas;
pub mod replication;
pub mod workqueue;
