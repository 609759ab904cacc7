//! Compiles the .proto files with protox (pure Rust), so building needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "infrastructor/v1/gateway.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The generated `connect` constructor would collide with the `Connect` rpc; agents build
        // their own TLS channel anyway.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
