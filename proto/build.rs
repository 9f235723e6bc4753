//! Compiles `rpool/v1/*.proto` with a vendored `protoc`, so a fresh machine
//! needs no system package. `PROTOC` in the environment takes precedence.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let protos = [
        "rpool/v1/agent.proto",
        "rpool/v1/admin.proto",
        "rpool/v1/raft.proto",
        "rpool/v1/enroll.proto",
    ];
    // The whole directory: the files above import others (pool.proto,
    // task.proto), and an edit to any of them must regenerate the code.
    println!("cargo:rerun-if-changed=rpool");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Smaller per-stream buffers than tonic's 8 KiB (module `codec`).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
