//! Generates the node API's messages and its client and server stubs.
//! Needs `protoc` on PATH (Debian: protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        // The transport helper would be a `NodeServiceClient::connect`
        // constructor, which collides with the `Connect` RPC; clients build
        // their channel (with TLS) themselves and call `new` anyway.
        .build_transport(false)
        .compile_protos(&["skiff/node/v1/node.proto"], &["."])?;
    Ok(())
}
