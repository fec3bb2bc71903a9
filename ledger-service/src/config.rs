//! What `openmodel-ledger serve` is told: the ledger file and its key, the
//! listen addresses, the TLS files and who may append. The binary fills it
//! from flags and environment variables; tests fill it directly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::limits::Limits;
use crate::{Error, Ledger, Result};
use openmodel_ledger::note::Signer;
use openmodel_ledger::store::OpenCheck;

/// The identity of the OpenModel operator's service account in the chart's
/// namespace: the one appender by default.
pub const DEFAULT_APPEND_USER: &str = "system:serviceaccount:openmodel-system:openmodel-operator";

/// The audience of the tokens callers send the ledger service by default,
/// the operator's among them (a projected service-account token): tokens
/// for it do not work against the Kubernetes API server.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "openmodel-ledger";

/// Configuration of one ledger service.
#[derive(Clone, Debug)]
pub struct Config {
    /// The SQLite ledger file. The service is its one writer.
    pub ledger: PathBuf,
    /// The log's private key (`PRIVATE+KEY+…`, as written by `openmodel
    /// ledger init`).
    pub key_file: PathBuf,
    /// Create the ledger when the file is missing (origin: the key's name).
    pub create: bool,
    /// The cluster name recorded in the `ledger.key` entry of a new ledger.
    pub cluster: String,
    /// Where the gRPC AuditService listens (port 0: any free port).
    pub grpc_listen: SocketAddr,
    /// Where the tiles are served over HTTPS (port 0: any free port).
    pub http_listen: SocketAddr,
    /// The serving certificate chain (PEM), used on both ports.
    pub tls_cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: PathBuf,
    /// The Kubernetes user names that may call `Append`.
    pub append_users: Vec<String>,
    /// How much the service takes on (sizes, calls at once, time).
    pub limits: Limits,
}

/// Reads a whole file, naming it and the setting it came from on failure.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

impl Config {
    /// Opens the ledger for appending with the key from `key_file`, or
    /// creates it when it is missing and `create` is set, reading as
    /// `limits` says. Blocking.
    pub(crate) fn open_ledger(&self) -> Result<Ledger> {
        Ok(self
            .open_or_create()?
            .with_read_limits(self.limits.read_limits())?)
    }

    fn open_or_create(&self) -> Result<Ledger> {
        let key = read_file(&self.key_file, "ledger key file (--key-file)")?;
        let signer: Signer = String::from_utf8_lossy(&key).trim().parse().map_err(|e| {
            Error::Config(format!(
                "{} holds no ledger signing key ({e}); it must hold the PRIVATE+KEY+… line \
                 written by `openmodel ledger init`",
                self.key_file.display()
            ))
        })?;
        if self.create && !self.ledger.exists() {
            Ok(Ledger::create(&self.ledger, signer, &self.cluster)?)
        } else {
            Ok(Ledger::open(&self.ledger, signer, OpenCheck::Quick)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            ledger: dir.join("ledger.sqlite"),
            key_file: dir.join("key"),
            create: false,
            cluster: "unit".into(),
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert: dir.join("tls.crt"),
            tls_key: dir.join("tls.key"),
            append_users: vec![DEFAULT_APPEND_USER.into()],
            limits: Limits::default(),
        }
    }

    #[test]
    fn the_ledger_is_created_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        let err = config.open_ledger().err().unwrap().to_string();
        assert!(err.contains("ledger key file (--key-file)"), "{err}");

        std::fs::write(&config.key_file, "not a key\n").unwrap();
        let err = config.open_ledger().err().unwrap().to_string();
        assert!(err.contains("PRIVATE+KEY"), "{err}");

        let signer = Signer::generate("unit.test/ledger").unwrap();
        std::fs::write(&config.key_file, format!("{signer}\n")).unwrap();
        let err = config.open_ledger().err().unwrap().to_string();
        assert!(err.contains("does not exist"), "{err}");

        config.create = true;
        let ledger = config.open_ledger().unwrap();
        assert_eq!(ledger.checkpoint().unwrap().checkpoint.size, 1);
        drop(ledger);
        // Once it exists, `create` opens it.
        assert_eq!(
            config
                .open_ledger()
                .unwrap()
                .checkpoint()
                .unwrap()
                .checkpoint
                .size,
            1
        );
    }
}
