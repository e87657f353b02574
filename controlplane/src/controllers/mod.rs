//! Controllers that run inside the control plane process.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod job;
pub mod nodelifecycle;
pub mod replicas;
pub mod replication;
pub mod watchcache;
pub mod workqueue;
