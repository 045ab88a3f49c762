//! Generate the gRPC baseline's `Bench` service (proto/bench.proto) with protox, a
//! protobuf compiler in Rust, and tonic-prost-build: the crate builds from a clean
//! clone with crates.io alone, no `protoc` on the PATH.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/bench.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    assert!(
        descriptors
            .file
            .iter()
            .any(|f| f.package.as_deref() == Some("tabos.bench")),
        "{PROTO} declares package tabos.bench"
    );
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
