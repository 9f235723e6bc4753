//! Compiles the minimal etcd v3 API subset in `bench/etcd_kv.proto` for
//! `rpool-bench` (client only), with a vendored `protoc` like `proto/build.rs`.
//! `PROTOC` in the environment takes precedence.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let proto = "bench/etcd_kv.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config, &[proto], &["bench"])?;
    Ok(())
}
