//! The node API between the control plane and the node agents, generated
//! from `skiff/node/v1/node.proto`.
//!
//! This crate is the wire contract only. Both sides convert these types into
//! their own domain types at the edge (`TryFrom`, with typed errors), so
//! nothing past the RPC handlers sees a protobuf struct.

pub mod node {
    pub mod v1 {
        // Generated code follows prost's conventions, not ours.
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("skiff.node.v1");
    }
}
