//! Shared pieces of the control plane benchmarks: an HTTPS client that
//! authenticates like `kubectl` with the admin certificate, latency
//! summaries, and the pod objects the API benchmarks write.
//!
//! The client is a thin layer over hyper's HTTP/1.1 connection API rather
//! than a pooled client, so that each benchmark decides exactly how many
//! connections it holds and when they are opened: connection setup stays
//! out of the measured latencies, and a watch owns its connection.

pub mod client;
pub mod pods;
pub mod stats;
