//! The ledger service for a test: a real SQLite ledger in a temporary
//! folder, TLS from a throwaway CA, and authorization by the test's
//! kube-apiserver (TokenReview and SubjectAccessReview). [`LedgerService`]
//! runs it in-process (`openmodel_ledger_service::Server`);
//! [`LedgerProcess`] runs the `openmodel-ledger` binary as its own process,
//! with the flags a pod passes, for what only a process shows (its resident
//! memory, its command line).
//!
//! Cargo gives the binary's path only to the ledger-service package's own
//! tests (`env!("CARGO_BIN_EXE_openmodel-ledger")`), so they pass it in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openmodel_ledger::Ledger;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::note::{Signer, Verifier};
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger_service::client::{AuditClient, Credentials, connect};
use openmodel_ledger_service::{Config, DEFAULT_TOKEN_AUDIENCE, KubeAccess, Limits, Server};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::audit_access::{Grant, audit_reader};
use crate::certs::serving_certificate;
use crate::identities::service_account_user;
use crate::process::{free_port, kill_group, log_tail, spawn};
use crate::{ControlPlane, Error};
use openmodel_operator::journal::LedgerLocation;

/// The origin (and key name) of test ledgers.
pub const LEDGER_ORIGIN: &str = "ledger.test/openmodel";

/// Writes `contents` to `dir/name`, naming the file on failure.
fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(Error::io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// What a ledger service serves from: a folder with the ledger file (made
/// and seeded here), its signing key, and a TLS certificate and key from a
/// throwaway CA for `127.0.0.1` and `localhost`.
struct LedgerFiles {
    dir: TempDir,
    verifier: Verifier,
    ca_pem: String,
    ledger: PathBuf,
    key_file: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
}

impl LedgerFiles {
    /// A new ledger signed by `signer` holding `entries` after its
    /// `ledger.key` entry, one commit each, so every size has a signed
    /// checkpoint.
    async fn create(signer: Signer, entries: Vec<Entry>) -> Result<LedgerFiles, Error> {
        let dir = tempfile::tempdir().map_err(Error::io("creating the ledger's folder"))?;
        let write = |name: &str, contents: &str| write_file(dir.path(), name, contents);
        let verifier = signer.verifier();
        let key_file = write("ledger.key", &format!("{signer}\n"))?;
        let tls = serving_certificate(&["127.0.0.1", "localhost"])?;
        let tls_cert = write("tls.crt", &tls.cert_pem)?;
        let tls_key = write("tls.key", &tls.key_pem)?;
        let ledger = dir.path().join("ledger.sqlite");
        let seed_path = ledger.clone();
        tokio::task::spawn_blocking(move || {
            let ledger = Ledger::create(&seed_path, signer, "test-cluster")?;
            entries
                .into_iter()
                .try_for_each(|entry| ledger.append(entry).map(drop))
        })
        .await
        .map_err(|e| Error::io("seeding the ledger")(std::io::Error::other(e)))??;
        Ok(LedgerFiles {
            dir,
            verifier,
            ca_pem: tls.ca_pem,
            ledger,
            key_file,
            tls_cert,
            tls_key,
        })
    }

    /// Writes `contents` to `name` in the folder.
    fn write(&self, name: &str, contents: &str) -> Result<PathBuf, Error> {
        write_file(self.dir.path(), name, contents)
    }

    /// The ledger file opened read-only (fully verified).
    fn read_ledger(&self) -> Result<Ledger, Error> {
        Ok(Ledger::open_read_only(&self.ledger, OpenCheck::Full)?)
    }
}

/// A ledger service's files and ports, and what tests ask of them; both
/// [`LedgerService`] and [`LedgerProcess`] dereference to it.
pub struct Served {
    files: LedgerFiles,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Served {
    /// The gRPC endpoint, `https://127.0.0.1:<port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// The gRPC port's address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The HTTPS URL of a tiles-port path (`checkpoint`, `tile/0/000`,
    /// `readyz`).
    pub fn tiles_url(&self, path: &str) -> String {
        format!("https://{}/{path}", self.http)
    }

    /// The CA certificate (PEM) that signed the service's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.files.ca_pem
    }

    /// The log's public key.
    pub fn verifier(&self) -> &Verifier {
        &self.files.verifier
    }

    /// A gRPC client trusting the CA and sending `credentials`.
    pub async fn client(&self, credentials: Credentials) -> Result<AuditClient, Error> {
        Ok(connect(
            &self.grpc_endpoint(),
            self.files.ca_pem.as_bytes(),
            credentials,
        )
        .await?)
    }

    /// The ledger file opened read-only beside the service (fully verified).
    pub fn read_ledger(&self) -> Result<Ledger, Error> {
        self.files.read_ledger()
    }
}

/// A ledger service running in this test's Tokio runtime; stopped when
/// dropped (or with [`LedgerService::stop`], which waits).
pub struct LedgerService {
    served: Served,
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
        let files = LedgerFiles::create(signer, entries).await?;
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let config = Config {
            ledger: files.ledger.clone(),
            key_file: files.key_file.clone(),
            create: false,
            cluster: "test-cluster".into(),
            grpc_listen: loopback,
            http_listen: loopback,
            tls_cert: files.tls_cert.clone(),
            tls_key: files.tls_key.clone(),
            append_users,
            limits: Limits::default(),
        };
        let mut service = LedgerService {
            served: Served {
                files,
                grpc: loopback,
                http: loopback,
            },
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
            grpc_listen: self.served.grpc,
            http_listen: self.served.http,
            ..self.config.clone()
        };
        let server = Server::bind(
            config,
            KubeAccess::new(self.kube.clone(), vec![DEFAULT_TOKEN_AUDIENCE.into()]),
        )
        .await?;
        (self.served.grpc, self.served.http) = (server.grpc_addr(), server.http_addr());
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
        let location = LedgerLocation::Service {
            endpoint: service.grpc_endpoint(),
            ca_file: service
                .files
                .write("client-ca.crt", &service.files.ca_pem)?,
            token_file: service.files.write("operator.token", &token)?,
        };
        Ok((service, location))
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

impl std::ops::Deref for LedgerService {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

impl std::ops::Deref for LedgerProcess {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

impl Drop for LedgerService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `openmodel-ledger` binary serving a ledger as its own process, on
/// free loopback ports; killed (SIGKILL, with its process group) when
/// dropped. Its log (JSON lines) is kept in its folder.
pub struct LedgerProcess {
    child: Child,
    served: Served,
    log: PathBuf,
}

impl LedgerProcess {
    /// Creates a ledger holding `entries` (as [`LedgerService::start`]
    /// does), then runs `binary serve` on it with TLS, `control_plane` for
    /// the TokenReviews and SubjectAccessReviews, and `args` added (who may
    /// append, limits); returns once it logs that it is serving (60 s at
    /// most).
    pub async fn start(
        binary: &Path,
        control_plane: &ControlPlane,
        entries: Vec<Entry>,
        args: &[String],
    ) -> Result<LedgerProcess, Error> {
        if !binary.exists() {
            return Err(Error::Io {
                what: format!(
                    "finding the ledger service binary {} (cargo builds it for the \
                     openmodel-ledger-service package's tests)",
                    binary.display()
                ),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let files = LedgerFiles::create(Signer::generate(LEDGER_ORIGIN)?, entries).await?;
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = files.dir.path().join("ledger-service.log");
        let stdout = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let stderr = stdout
            .try_clone()
            .map_err(Error::io("sharing the ledger service's log file"))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--ledger")
            .arg(&files.ledger)
            .arg("--key-file")
            .arg(&files.key_file)
            .arg("--tls-cert")
            .arg(&files.tls_cert)
            .arg("--tls-key")
            .arg(&files.tls_key)
            .arg("--kubeconfig")
            .arg(control_plane.kubeconfig())
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = spawn(command).map_err(Error::io(format!("running {}", binary.display())))?;
        let process = LedgerProcess {
            child,
            served: Served { files, grpc, http },
            log,
        };
        process.wait_serving(Duration::from_secs(60)).await?;
        Ok(process)
    }

    /// Waits until the log says the service is serving.
    async fn wait_serving(&self, patience: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + patience;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("ledger service serving") {
                return Ok(());
            }
            if !crate::is_running(self.pid()) || Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "the ledger service to serve".into(),
                    waited: patience,
                    detail: log_tail(&self.log, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peak resident set size so far (`VmHWM`), in MiB; `None` once
    /// the process is gone.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        crate::cluster_components::peak_rss_mib(self.pid())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}
