//! Compiles the .proto files with protox (pure Rust, no system `protoc`) and
//! generates the prost messages and tonic clients and servers into
//! `OUT_DIR`, one package at a time:
//!
//! - `inference/` (include root): package `inference`, the Open Inference
//!   Protocol v2 in Triton's superset, named as in Triton
//!   (`grpc_service.proto` importing `model_config.proto`) → `inference.rs`;
//! - `audit/` (include root): package `openmodel.audit.v1alpha1`, the audit
//!   ledger service → `openmodel.audit.v1alpha1.rs`.
//!
//! Each package also gets its encoded `FileDescriptorSet` (with source info,
//! so reflection clients see the comments), `<descriptor>.bin`, exposed as
//! the package module's `FILE_DESCRIPTOR_SET`.

use std::{env, fs, io, path::Path, path::PathBuf};

use prost::Message;

/// One protobuf package: its include root, the files compiled (their
/// imports come along) and the name of its descriptor set file.
struct Package {
    root: &'static str,
    files: &'static [&'static str],
    descriptor: &'static str,
}

const PACKAGES: &[Package] = &[
    Package {
        root: "inference",
        files: &["grpc_service.proto", "model_config.proto"],
        descriptor: "inference_descriptor.bin",
    },
    Package {
        root: "audit",
        files: &["openmodel/audit/v1alpha1/audit.proto"],
        descriptor: "audit_descriptor.bin",
    },
];

fn compile(package: &Package, out_dir: &Path) -> io::Result<()> {
    println!("cargo:rerun-if-changed={}", package.root);
    let fds = protox::compile(package.files, [package.root]).map_err(|e| {
        io::Error::other(format!(
            "compiling the .proto files under {}/: {e:?}",
            package.root
        ))
    })?;
    fs::write(out_dir.join(package.descriptor), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // RPCs a server does not implement answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds(fds)
}

fn main() -> io::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for package in PACKAGES {
        compile(package, &out_dir)?;
    }
    Ok(())
}
