//! OpenModel's integration tests and their harness: a real Kubernetes
//! control plane (etcd and kube-apiserver built from the Go module in
//! `tools/k8s/` by `scripts/build-control-plane.sh`) started on loopback for
//! each test binary, and helpers to set up what the tests run in.
//!
//! ```no_run
//! # async fn example() -> Result<(), openmodel_tests::Error> {
//! use openmodel_tests::{ControlPlane, create_namespace};
//!
//! let control_plane = ControlPlane::shared().await?;
//! let client = control_plane.client()?;
//! let namespace = create_namespace(&client, "my_test").await?;
//! let output = control_plane.kubectl().args(["get", "ns", &namespace]).output();
//! # let _ = output;
//! # Ok(())
//! # }
//! ```
//!
//! [`LedgerService`] runs the ledger service (`openmodel-ledger serve`)
//! in-process, with TLS from a throwaway CA ([`serving_certificate`]) and
//! authorization by the control plane; [`service_account_token`] and
//! [`wait_for_permission`] give tests other identities.
//!
//! [`operator`] runs the OpenModel operator in-process for a test and plays
//! the parts of the cluster this level lacks (kubelet, Deployment controller).
//!
//! [`cluster_components`] starts kube-controller-manager, kube-scheduler
//! and kwok (simulated nodes) around a control plane, for scale benchmarks.
//!
//! [`cluster`] runs the real single-node cluster of `scripts/cluster.sh`
//! (kubelet, containerd, kube-proxy, CoreDNS) for the end-to-end test.
//!
//! [`relay::Relay`] carries TCP connections and can make them go silent
//! (no FIN, no RST), for clients that must notice a vanished peer.
//!
//! [`helm`] finds the helm binary and the chart for the chart tests.
//!
//! `docs/testing.md` describes the harness and how to build the binaries.

pub mod audit_access;
mod certs;
pub mod cluster;
pub mod cluster_components;
mod controlplane;
pub mod entries;
mod error;
pub mod helm;
mod identities;
mod ledger_service;
pub mod operator;
pub mod operator_process;
mod process;
pub mod relay;
mod resources;

pub use certs::{ServingCertificate, serving_certificate};
pub use controlplane::{
    BIN_ENV, ControlPlane, WEBHOOK_CLIENT_NAME, bin_dir, remove_stale_data_dirs,
};
pub use error::Error;
pub use identities::{
    ledger_token, service_account_token, service_account_user, wait_for_permission,
};
pub use ledger_service::LedgerProcess;
pub use ledger_service::{LEDGER_ORIGIN, LedgerService};
pub use process::is_running;
pub use resources::{TEST_LABEL, create_namespace, install_crds};

/// The workspace's root folder (where `scripts/`, `.cache/` and `target/` are).
pub fn workspace() -> &'static std::path::Path {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests)
}

/// The folder a tool's binaries are in: the folder named by the variable
/// `env` when it is set and not empty, else `default` under the workspace
/// (`.cache/<tool>/bin`, where the project's scripts put it).
pub(crate) fn tool_dir(env: &str, default: &str) -> std::path::PathBuf {
    match std::env::var_os(env) {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => workspace().join(default),
    }
}
