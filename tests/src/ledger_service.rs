//! The ledger service (`openmodel_ledger_service`) in-process for a test:
//! a real SQLite ledger in a temporary folder, TLS from a throwaway CA, and
//! authorization by the test's kube-apiserver (TokenReview and
//! SubjectAccessReview through the given client).

use std::net::SocketAddr;
use std::path::PathBuf;

use openmodel_ledger::Ledger;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::note::{Signer, Verifier};
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger_service::client::{AuditClient, Credentials, connect};
use openmodel_ledger_service::{Config, KubeAccess, Server};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;
use crate::audit_access::{Grant, audit_reader};
use crate::certs::serving_certificate;
use crate::identities::service_account_user;
use openmodel_operator::journal::LedgerLocation;

/// The origin (and key name) of test ledgers.
pub const LEDGER_ORIGIN: &str = "ledger.test/openmodel";

/// A ledger service running in this test's Tokio runtime; stopped when
/// dropped (or with [`LedgerService::stop`], which waits).
pub struct LedgerService {
    dir: TempDir,
    verifier: Verifier,
    ca_pem: String,
    grpc: SocketAddr,
    http: SocketAddr,
    config: Config,
    kube: kube::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<openmodel_ledger_service::Result<()>>>,
}

impl LedgerService {
    /// Creates a ledger holding `entries` (after its `ledger.key` entry, one
    /// commit each, so every size has a signed checkpoint), then serves it on
    /// loopback ports, authorizing with `client`'s API server and letting
    /// `append_users` append.
    pub async fn start(
        client: kube::Client,
        entries: Vec<Entry>,
        append_users: Vec<String>,
    ) -> Result<LedgerService, Error> {
        let signer = Signer::generate(LEDGER_ORIGIN)?;
        Self::start_signed(client, signer, entries, append_users).await
    }

    /// As [`LedgerService::start`], with the log signed by `signer` (whose
    /// name is the log's origin): two services with one signer serve two
    /// histories of one log, a fork.
    pub async fn start_signed(
        client: kube::Client,
        signer: Signer,
        entries: Vec<Entry>,
        append_users: Vec<String>,
    ) -> Result<LedgerService, Error> {
        let dir = tempfile::tempdir().map_err(Error::io("creating the ledger's folder"))?;
        let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)
                .map_err(Error::io(format!("writing {}", path.display())))?;
            Ok(path)
        };
        let verifier = signer.verifier();
        let key_file = write("ledger.key", &format!("{signer}\n"))?;
        let tls = serving_certificate(&["127.0.0.1", "localhost"])?;
        let tls_cert = write("tls.crt", &tls.cert_pem)?;
        let tls_key = write("tls.key", &tls.key_pem)?;
        let ledger_path = dir.path().join("ledger.sqlite");
        let seed_path = ledger_path.clone();
        tokio::task::spawn_blocking(move || {
            let ledger = Ledger::create(&seed_path, signer, "test-cluster")?;
            entries
                .into_iter()
                .try_for_each(|entry| ledger.append(entry).map(drop))
        })
        .await
        .map_err(|e| Error::io("seeding the ledger")(std::io::Error::other(e)))??;

        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let config = Config {
            ledger: ledger_path,
            key_file,
            create: false,
            cluster: "test-cluster".into(),
            grpc_listen: loopback,
            http_listen: loopback,
            tls_cert,
            tls_key,
            append_users,
        };
        let mut service = LedgerService {
            dir,
            verifier,
            ca_pem: tls.ca_pem,
            grpc: loopback,
            http: loopback,
            config,
            kube: client,
            stop: None,
            task: None,
        };
        service.launch().await?;
        Ok(service)
    }

    /// Binds and serves with the configuration (on the ports of the last
    /// launch, once there was one).
    async fn launch(&mut self) -> Result<(), Error> {
        let config = Config {
            grpc_listen: self.grpc,
            http_listen: self.http,
            ..self.config.clone()
        };
        let server = Server::bind(config, KubeAccess::new(self.kube.clone())).await?;
        (self.grpc, self.http) = (server.grpc_addr(), server.http_addr());
        let (stop, stopped) = oneshot::channel();
        self.task = Some(tokio::spawn(server.run(async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
        Ok(())
    }

    /// Stops the service (the ledger closed, every acknowledged append
    /// committed), keeps it down for `down`, and starts it again on the
    /// same ledger and ports: a restarted pod.
    pub async fn restart(&mut self, down: std::time::Duration) -> Result<(), Error> {
        self.shut_down().await?;
        tokio::time::sleep(down).await;
        self.launch().await
    }

    /// A service on an empty ledger for the operator of `namespace`: its
    /// service account `openmodel-operator` may append and read the
    /// namespace's entries (the spec history). Returns the service and
    /// where the operator finds it (CA and token files in the service's
    /// folder).
    pub async fn for_operator(
        client: &kube::Client,
        namespace: &str,
    ) -> Result<(LedgerService, LedgerLocation), Error> {
        const ACCOUNT: &str = "openmodel-operator";
        let token = audit_reader(client, namespace, ACCOUNT, Grant::Namespace(namespace)).await?;
        let service = LedgerService::start(
            client.clone(),
            Vec::new(),
            vec![service_account_user(namespace, ACCOUNT)],
        )
        .await?;
        let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = service.dir.path().join(name);
            std::fs::write(&path, contents)
                .map_err(Error::io(format!("writing {}", path.display())))?;
            Ok(path)
        };
        let location = LedgerLocation::Service {
            endpoint: service.grpc_endpoint(),
            ca_file: write("client-ca.crt", &service.ca_pem)?,
            token_file: write("operator.token", &token)?,
        };
        Ok((service, location))
    }

    /// The gRPC endpoint, `https://127.0.0.1:<port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// The HTTPS URL of a tiles path (`checkpoint`, `tile/0/000`).
    pub fn tiles_url(&self, path: &str) -> String {
        format!("https://{}/{path}", self.http)
    }

    /// The CA certificate (PEM) that signed the service's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The log's public key.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// A gRPC client trusting the CA and sending `credentials`.
    pub async fn client(&self, credentials: Credentials) -> Result<AuditClient, Error> {
        Ok(connect(&self.grpc_endpoint(), self.ca_pem.as_bytes(), credentials).await?)
    }

    /// The ledger file opened read-only beside the service (fully verified).
    pub fn read_ledger(&self) -> Result<Ledger, Error> {
        Ok(Ledger::open_read_only(
            &self.dir.path().join("ledger.sqlite"),
            OpenCheck::Full,
        )?)
    }

    /// Stops the service and waits until it has closed the ledger.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.shut_down().await
    }

    async fn shut_down(&mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::io("stopping the ledger service")(std::io::Error::other(e)))?
                .map_err(Error::from),
            None => Ok(()),
        }
    }
}

impl Drop for LedgerService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
