//! The `openmodel-ledger` binary: its help explains the service, and
//! `serve` refuses to start without what it needs, saying what is missing.

use std::process::{Command, Output};

fn ledger_bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_openmodel-ledger"))
        .args(args)
        // Nothing from the environment may fill in a flag under test.
        .env_clear()
        .output()
        .expect("running openmodel-ledger")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_explains_the_service_and_its_authorization() {
    let out = ledger_bin(&["--help"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for needle in [
        "serve",
        "TokenReview",
        "SubjectAccessReview",
        "openmodels/audit",
        "docs/ledger-service.md",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }

    let out = ledger_bin(&["serve", "--help"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for needle in [
        "--ledger",
        "--key-file",
        "--create",
        "--cluster",
        "--grpc-listen",
        "--http-listen",
        "--tls-cert",
        "--tls-key",
        "--append-user",
        "--kubeconfig",
        "--log-format",
        "OPENMODEL_TLS_CERT",
        "system:serviceaccount:openmodel-system:openmodel-operator",
        "no plaintext mode",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[test]
fn serve_without_tls_flags_names_them() {
    let out = ledger_bin(&["serve", "--ledger", "l.sqlite", "--key-file", "key"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--tls-cert <FILE>") && stderr.contains("--tls-key <FILE>"),
        "{stderr}"
    );
}

#[test]
fn serve_with_unreadable_tls_files_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.crt");
    let kubeconfig = dir.path().join("kubeconfig");
    // A kubeconfig that parses; the TLS files are read before anything is asked of it.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .unwrap();
    let out = ledger_bin(&[
        "serve",
        "--ledger",
        "l.sqlite",
        "--key-file",
        "key",
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        missing.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--log-format",
        "text",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("TLS certificate (--tls-cert)") && stderr.contains("missing.crt"),
        "{stderr}"
    );
}

#[test]
fn version_and_usage_name_the_binary_not_the_crate() {
    let out = ledger_bin(&["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("openmodel-ledger {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&ledger_bin(&["--help"]).stdout);
    assert!(help.contains("Usage: openmodel-ledger "), "{help}");
}
