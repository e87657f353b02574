//! Controllers that run inside the control plane process.

pub mod events;
pub mod gc;
