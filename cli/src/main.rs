//! `openmodel`: the OpenModel command line (also `kubectl openmodel` when
//! installed as `kubectl-openmodel`).
//!
//! Thin wiring over `openmodel-ledger`: argument parsing in [`cli`], the
//! commands in [`commands`], written once against a [`source::Source`] (a
//! ledger file, or the ledger service through [`remote`], whose answers are
//! checked with the key and checkpoints kept by [`trust`]; the bearer token
//! comes from [`kubeconfig`]); [`walk`] proves a whole log read in order;
//! rendering in [`output`]. Exit codes are part of the interface (see
//! [`ExitCode`]).

mod cli;
mod commands;
mod kubeconfig;
mod output;
mod source;
mod trust;
mod walk;

use clap::{CommandFactory, FromArgMatches};
use openmodel_ledger::Error as LedgerError;

/// Exit codes scripts can rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success; for `verify`, everything verified.
    Ok = 0,
    /// Verification failed: tampering, a bad signature or a proof that does not hold.
    VerificationFailed = 1,
    /// Usage error (unknown flag, missing argument).
    Usage = 2,
    /// A fork: two views of the log that cannot both be true.
    Fork = 3,
    /// Anything else: bad input, missing files, I/O.
    Error = 4,
}

/// Exit code for an error from a command.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<LedgerError>() {
        Some(e) if e.is_fork() => ExitCode::Fork,
        Some(e) if e.is_verification_failure() => ExitCode::VerificationFailed,
        _ => ExitCode::Error,
    }
}

/// How the binary was invoked: `kubectl-openmodel` is used as `kubectl openmodel`.
fn bin_name() -> String {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let file = std::path::Path::new(&argv0)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file.starts_with("kubectl-") {
        "kubectl openmodel".to_owned()
    } else {
        "openmodel".to_owned()
    }
}

fn main() -> std::process::ExitCode {
    let command = cli::Cli::command().bin_name(bin_name());
    let parsed = command
        .try_get_matches()
        .and_then(|m| cli::Cli::from_arg_matches(&m));
    let args = match parsed {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                ExitCode::Usage as u8
            } else {
                0
            });
        }
    };
    match commands::run(args) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(err) => {
            let code = exit_code(&err);
            let label = match code {
                ExitCode::Fork => "FORK",
                ExitCode::VerificationFailed => "VERIFICATION FAILED",
                _ => "error",
            };
            eprintln!("{label}: {err:#}");
            std::process::ExitCode::from(code as u8)
        }
    }
}
