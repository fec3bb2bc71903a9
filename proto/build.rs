//! Compiles the .proto files under `inference/` with protox (pure Rust, no
//! system `protoc`) and generates the prost messages and tonic client and
//! server into `OUT_DIR`:
//!
//! - `inference.rs`: the Rust of package `inference`;
//! - `inference_descriptor.bin`: the encoded `FileDescriptorSet` (with source
//!   info, so reflection clients see the comments), exposed as
//!   `openmodel_proto::inference::FILE_DESCRIPTOR_SET`.
//!
//! The include root is `inference/` so the files are named as in Triton
//! (`grpc_service.proto` importing `model_config.proto`).

use std::{env, fs, io, path::PathBuf};

use prost::Message;

/// The include root of package `inference`.
const INFERENCE_ROOT: &str = "inference";

/// The files compiled; their imports come along.
const INFERENCE_FILES: &[&str] = &["grpc_service.proto", "model_config.proto"];

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed={INFERENCE_ROOT}");
    let fds = protox::compile(INFERENCE_FILES, [INFERENCE_ROOT])
        .map_err(|e| io::Error::other(format!("compiling the .proto files: {e:?}")))?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(
        out_dir.join("inference_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // RPCs a server does not implement answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds(fds)
}
