//! A real Kubernetes control plane for tests: etcd and kube-apiserver, built
//! from the Go module in `tools/k8s/` by `scripts/build-control-plane.sh`,
//! started on free loopback ports with a fresh PKI in a temporary folder.

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tempfile::TempDir;
use tokio::sync::OnceCell;

use crate::Error;
pub use crate::certs::WEBHOOK_CLIENT_NAME;
use crate::certs::{CertifiedKey, Pki, client_certificate};
use crate::process;

/// The environment variable that names the folder holding `etcd`,
/// `kube-apiserver` and `kubectl`, instead of `.cache/k8s/bin` in the
/// workspace.
pub const BIN_ENV: &str = "OPENMODEL_K8S_BIN";

/// How long etcd and kube-apiserver get to become ready. Generous: a cold
/// start on a busy 2-core machine takes well under a minute.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Data folders are named `openmodel-controlplane-<pid>-<random>` in the
/// system's temporary folder, so that the folders of test processes that were
/// killed before they could clean up can be found and removed.
const DATA_DIR_PREFIX: &str = "openmodel-controlplane-";

/// The issuer in service-account tokens (what a cluster uses by default).
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The name of the cluster, user and context in the kubeconfig.
const KUBECONFIG_NAME: &str = "openmodel-test";

/// The control plane shared by every test in one test binary.
static SHARED: OnceCell<ControlPlane> = OnceCell::const_new();

/// The folder that holds the control-plane binaries: `$OPENMODEL_K8S_BIN`,
/// or `.cache/k8s/bin` in the workspace (where
/// `scripts/build-control-plane.sh` puts them).
pub fn bin_dir() -> PathBuf {
    crate::tool_dir(BIN_ENV, ".cache/k8s/bin")
}

/// Checks that `dir` holds every binary the harness runs.
fn check_binaries(dir: &Path) -> Result<(), Error> {
    for binary in ["etcd", "kube-apiserver", "kubectl"] {
        let path = dir.join(binary);
        if !path.is_file() {
            return Err(Error::MissingBinary {
                binary,
                path,
                env: BIN_ENV,
            });
        }
    }
    Ok(())
}

/// A running etcd + kube-apiserver. Dropping it kills both processes (and
/// their process groups) and removes its data folder; so does the end of the
/// test process for [`ControlPlane::shared`], and the kernel kills the
/// processes if the test process dies any other way.
pub struct ControlPlane {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    kubeconfig: PathBuf,
    config: Config,
    state: Mutex<State>,
    /// The CA the apiserver trusts for client certificates, and its port,
    /// for kubeconfigs of other users.
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    apiserver_port: u16,
    /// The CA of the certificate the apiserver presents to webhooks.
    webhook_client_ca: PathBuf,
}

/// What has to be undone when the control plane stops.
struct State {
    apiserver: Option<Child>,
    etcd: Option<Child>,
    data_dir: Option<TempDir>,
}

/// The two processes, for waiting and error messages.
#[derive(Clone, Copy)]
enum Component {
    Etcd,
    ApiServer,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
        }
    }
}

impl ControlPlane {
    /// The control plane shared by every test in this test binary, started
    /// by the first test that asks for it. It is stopped and its folder
    /// removed when the test binary exits, whether tests passed or failed.
    ///
    /// Tests that share it should each work in their own namespace
    /// ([`crate::create_namespace`]) and give cluster-scoped objects unique
    /// names.
    pub async fn shared() -> Result<&'static ControlPlane, Error> {
        SHARED
            .get_or_try_init(|| async {
                let control_plane = ControlPlane::start().await?;
                // SAFETY: registers a function with no arguments that never
                // unwinds; it runs once, at normal process exit (including
                // libtest's exit with a failure status).
                unsafe {
                    libc::atexit(stop_shared);
                }
                Ok(control_plane)
            })
            .await
    }

    /// Starts a control plane of its own (most tests want
    /// [`ControlPlane::shared`]): etcd, then kube-apiserver, and waits until
    /// the apiserver's `/readyz` answers `ok`.
    pub async fn start() -> Result<ControlPlane, Error> {
        let bin_dir = bin_dir();
        check_binaries(&bin_dir)?;
        remove_stale_data_dirs();
        let temp = tempfile::Builder::new()
            .prefix(&format!("{DATA_DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(Error::io("creating the control plane's data folder"))?;
        let data_dir = temp.path().to_path_buf();

        let pki = Pki::generate()?;
        let files = PkiFiles::write(&data_dir, &pki)?;
        let ports = Ports {
            etcd_client: process::free_port()?,
            etcd_peer: process::free_port()?,
            apiserver: process::free_port()?,
        };
        let kubeconfig = data_dir.join("kubeconfig.yaml");
        let text = kubeconfig_yaml(ports.apiserver, &pki.ca_pem, &pki.admin).map_err(|source| {
            Error::WriteKubeconfig {
                path: kubeconfig.clone(),
                source,
            }
        })?;
        fs::write(&kubeconfig, text)
            .map_err(Error::io(format!("writing {}", kubeconfig.display())))?;
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;

        // From here on, dropping `control_plane` (on an error too) stops
        // whatever was started.
        let control_plane = ControlPlane {
            bin_dir,
            data_dir,
            kubeconfig,
            config,
            state: Mutex::new(State {
                apiserver: None,
                etcd: None,
                data_dir: Some(temp),
            }),
            ca: pki.ca,
            ca_pem: pki.ca_pem,
            apiserver_port: ports.apiserver,
            webhook_client_ca: files.webhook_client_ca.clone(),
        };
        control_plane.spawn(Component::Etcd, etcd_args(&control_plane.data_dir, &ports))?;
        control_plane
            .wait_ready(Component::Etcd, async || {
                TcpStream::connect((Ipv4Addr::LOCALHOST, ports.etcd_client))
                    .map(drop)
                    .map_err(|err| format!("connecting to etcd: {err}"))
            })
            .await?;
        control_plane.spawn(Component::ApiServer, apiserver_args(&files, &ports))?;
        let client = control_plane.client()?;
        control_plane
            .wait_ready(Component::ApiServer, async || {
                let request = http_get("/readyz")?;
                match client.request_text(request).await {
                    Ok(body) if body.trim() == "ok" => Ok(()),
                    Ok(body) => Err(format!("/readyz answered {body:?}")),
                    Err(err) => Err(format!("/readyz: {err}")),
                }
            })
            .await?;
        Ok(control_plane)
    }

    /// A client authenticated as the cluster administrator (a client
    /// certificate in `system:masters`). Make one per test: a client belongs
    /// to the Tokio runtime it was made in, and each `#[tokio::test]` has
    /// its own.
    pub fn client(&self) -> Result<Client, Error> {
        Ok(Client::try_from(self.config.clone())?)
    }

    /// A client that authenticates with a bearer token (for example a
    /// service-account token from the TokenRequest API) instead of the admin
    /// certificate.
    pub fn client_with_token(&self, token: &str) -> Result<Client, Error> {
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        };
        Ok(Client::try_from(config)?)
    }

    /// The CA (PEM file) of the client certificate the apiserver presents
    /// to admission webhooks, for [`WEBHOOK_CLIENT_NAME`]: what a webhook
    /// that only the apiserver may call trusts.
    pub fn webhook_client_ca(&self) -> &Path {
        &self.webhook_client_ca
    }

    /// The kubeconfig file for this control plane (admin credentials
    /// embedded); `kubectl --kubeconfig <it>` talks to it.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig (written into the data folder) for `user` in `groups`,
    /// authenticated by a client certificate the apiserver's CA signed: a
    /// person other than the administrator, for RBAC and for who-did-what.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let certificate = client_certificate(&self.ca, user, groups)?;
        let path = self.data_dir.join(format!("kubeconfig-{user}.yaml"));
        let text =
            kubeconfig_yaml(self.apiserver_port, &self.ca_pem, &certificate).map_err(|source| {
                Error::WriteKubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
        fs::write(&path, text).map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// A `kubectl` command from the harness's binaries, already pointed at
    /// this control plane with `--kubeconfig`. Add arguments and run it.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// The temporary folder with etcd's data, the certificates, the
    /// kubeconfig and the logs (`etcd.log`, `kube-apiserver.log`). It is
    /// removed when the control plane stops.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process ids of etcd and kube-apiserver (those still running).
    pub fn process_ids(&self) -> Vec<u32> {
        let state = self.lock();
        [&state.etcd, &state.apiserver]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect()
    }

    /// Kills kube-apiserver and etcd with their process groups and removes
    /// the data folder. Idempotent.
    fn stop(&self) {
        let mut state = self.lock();
        for child in [state.apiserver.take(), state.etcd.take()]
            .iter_mut()
            .flatten()
        {
            process::kill_group(child);
        }
        // Dropping the TempDir removes the folder; a failure leaves it for
        // `remove_stale_data_dirs`.
        state.data_dir.take();
    }

    /// The state, even if a panicking test poisoned the lock.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts one component with its output in `<data dir>/<name>.log`.
    fn spawn(&self, component: Component, args: Vec<String>) -> Result<(), Error> {
        let name = component.name();
        let log_path = self.log_path(component);
        let log = fs::File::create(&log_path)
            .map_err(Error::io(format!("creating {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let mut command = Command::new(self.bin_dir.join(name));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = process::spawn(command).map_err(Error::io(format!(
            "starting {}",
            self.bin_dir.join(name).display()
        )))?;
        let mut state = self.lock();
        match component {
            Component::Etcd => state.etcd = Some(child),
            Component::ApiServer => state.apiserver = Some(child),
        }
        Ok(())
    }

    fn log_path(&self, component: Component) -> PathBuf {
        self.data_dir.join(format!("{}.log", component.name()))
    }

    /// Polls `probe` until it succeeds, failing early if the process exits
    /// and after [`READY_TIMEOUT`] otherwise; both errors carry the end of
    /// the process's log.
    async fn wait_ready(
        &self,
        component: Component,
        mut probe: impl AsyncFnMut() -> Result<(), String>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let log = self.log_path(component);
        loop {
            let exited = {
                let mut state = self.lock();
                let child = match component {
                    Component::Etcd => state.etcd.as_mut(),
                    Component::ApiServer => state.apiserver.as_mut(),
                };
                match child.map(Child::try_wait) {
                    Some(Ok(Some(status))) => Some(status),
                    _ => None,
                }
            };
            if let Some(status) = exited {
                return Err(Error::Exited {
                    process: component.name(),
                    status,
                    tail: process::log_tail(&log, 30),
                    log,
                });
            }
            let last = match probe().await {
                Ok(()) => return Ok(()),
                Err(last) => last,
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Timeout {
                    what: component.name().to_string(),
                    waited: started.elapsed(),
                    detail: format!(
                        "{last}; the end of {}:\n{}",
                        log.display(),
                        process::log_tail(&log, 30)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops the shared control plane at process exit.
extern "C" fn stop_shared() {
    if let Some(control_plane) = SHARED.get() {
        control_plane.stop();
    }
}

/// A GET request for a path on the apiserver.
fn http_get(path: &str) -> Result<http::Request<Vec<u8>>, String> {
    http::Request::get(path)
        .body(Vec::new())
        .map_err(|err| err.to_string())
}

/// Removes the data folders of control planes whose test process no longer
/// exists (killed before it could clean up) and returns them.
pub fn remove_stale_data_dirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let pid: u32 = name
                .strip_prefix(DATA_DIR_PREFIX)?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            let path = entry.path();
            (pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && fs::remove_dir_all(&path).is_ok())
            .then_some(path)
        })
        .collect()
}

/// The loopback ports one control plane listens on.
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

/// Where the PKI was written.
struct PkiFiles {
    ca: PathBuf,
    apiserver_cert: PathBuf,
    apiserver_key: PathBuf,
    service_account_key: PathBuf,
    service_account_pub: PathBuf,
    webhook_client_ca: PathBuf,
    admission_config: PathBuf,
    cert_dir: PathBuf,
}

impl PkiFiles {
    fn write(dir: &Path, pki: &Pki) -> Result<PkiFiles, Error> {
        let pki_dir = dir.join("pki");
        fs::create_dir(&pki_dir).map_err(Error::io(format!("creating {}", pki_dir.display())))?;
        let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = pki_dir.join(name);
            fs::write(&path, contents).map_err(Error::io(format!("writing {}", path.display())))?;
            Ok(path)
        };
        Ok(PkiFiles {
            ca: write("ca.crt", &pki.ca_pem)?,
            apiserver_cert: write("apiserver.crt", &pki.apiserver.cert_pem)?,
            apiserver_key: write("apiserver.key", &pki.apiserver.key_pem)?,
            service_account_key: write("sa.key", &pki.service_account_key_pem)?,
            service_account_pub: write("sa.pub", &pki.service_account_pub_pem)?,
            webhook_client_ca: write("webhook-client-ca.crt", &pki.webhook_client_ca_pem)?,
            admission_config: write(
                "admission.yaml",
                &admission_config_yaml(&write(
                    "admission-kubeconfig.yaml",
                    &admission_kubeconfig_yaml(&pki.webhook_client),
                )?),
            )?,
            cert_dir: pki_dir,
        })
    }
}

/// etcd's command line: one member on loopback, no fsync (the data is
/// thrown away).
fn etcd_args(data_dir: &Path, ports: &Ports) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
        "--name=openmodel-test".into(),
        format!("--data-dir={}", data_dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=openmodel-test={peer}"),
        "--unsafe-no-fsync=true".into(),
    ]
}

/// kube-apiserver's command line: TLS with the test PKI, client
/// certificates and service-account tokens for authentication, Node and
/// RBAC for authorization.
fn apiserver_args(files: &PkiFiles, ports: &Ports) -> Vec<String> {
    let path = |p: &PathBuf| p.display().to_string();
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={}", ports.apiserver),
        format!("--cert-dir={}", path(&files.cert_dir)),
        format!("--tls-cert-file={}", path(&files.apiserver_cert)),
        format!("--tls-private-key-file={}", path(&files.apiserver_key)),
        format!("--client-ca-file={}", path(&files.ca)),
        "--authorization-mode=Node,RBAC".into(),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!(
            "--service-account-key-file={}",
            path(&files.service_account_pub)
        ),
        format!(
            "--service-account-signing-key-file={}",
            path(&files.service_account_key)
        ),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--allow-privileged=true".into(),
        // A loopback address is not a valid endpoint for the `kubernetes`
        // service; without nodes nothing could use it anyway.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
        // The client certificate it presents to admission webhooks.
        format!(
            "--admission-control-config-file={}",
            path(&files.admission_config)
        ),
    ]
}

/// kube-apiserver's AdmissionConfiguration: webhooks are called with the
/// credentials of the kubeconfig `kubeconfig` (the same for every webhook).
fn admission_config_yaml(kubeconfig: &Path) -> String {
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            kubeconfig.display()
        )
    };
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
        plugin("ValidatingAdmissionWebhook"),
        plugin("MutatingAdmissionWebhook")
    )
}

/// The kubeconfig of webhook calls: `client` for every webhook (`*`).
fn admission_kubeconfig_yaml(client: &CertifiedKey) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        BASE64.encode(&client.cert_pem),
        BASE64.encode(&client.key_pem)
    )
}

/// A kubeconfig for the user of `client` (the admin, or a test user),
/// certificates embedded.
fn kubeconfig_yaml(
    port: u16,
    ca_pem: &str,
    client: &CertifiedKey,
) -> Result<String, serde_saphyr::SerializeError> {
    // Plain scalars: the certificates are single long base64 lines, which
    // would otherwise become folded block scalars.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": KUBECONFIG_NAME,
                "cluster": {
                    "server": format!("https://127.0.0.1:{port}"),
                    "certificate-authority-data": BASE64.encode(ca_pem),
                },
            }],
            "users": [{
                "name": KUBECONFIG_NAME,
                "user": {
                    "client-certificate-data": BASE64.encode(&client.cert_pem),
                    "client-key-data": BASE64.encode(&client.key_pem),
                },
            }],
            "contexts": [{
                "name": KUBECONFIG_NAME,
                "context": {"cluster": KUBECONFIG_NAME, "user": KUBECONFIG_NAME, "namespace": "default"},
            }],
            "current-context": KUBECONFIG_NAME,
        }),
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_build_script() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_binaries(dir.path()).unwrap_err().to_string();
        assert!(err.contains("etcd not found"), "{err}");
        assert!(err.contains("scripts/build-control-plane.sh"), "{err}");
        assert!(err.contains(BIN_ENV), "{err}");

        for binary in ["etcd", "kube-apiserver"] {
            fs::write(dir.path().join(binary), "").unwrap();
        }
        let err = check_binaries(dir.path()).unwrap_err().to_string();
        assert!(err.contains("kubectl not found"), "{err}");
        fs::write(dir.path().join("kubectl"), "").unwrap();
        check_binaries(dir.path()).unwrap();
    }

    #[test]
    fn the_default_bin_dir_is_in_the_workspace_cache() {
        if std::env::var_os(BIN_ENV).is_none() {
            assert!(bin_dir().ends_with(".cache/k8s/bin"));
            let workspace = bin_dir().ancestors().nth(3).unwrap().to_path_buf();
            assert!(workspace.join("Cargo.toml").is_file(), "{workspace:?}");
        }
    }

    #[test]
    fn the_kubeconfig_parses_and_names_the_server() {
        let pki = Pki::generate().unwrap();
        let text = kubeconfig_yaml(6443, &pki.ca_pem, &pki.admin).unwrap();
        let parsed = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some(KUBECONFIG_NAME));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        let ca = BASE64
            .decode(cluster.certificate_authority_data.as_ref().unwrap())
            .unwrap();
        assert_eq!(ca, pki.ca_pem.as_bytes());
    }

    #[test]
    fn stale_data_dirs_of_dead_processes_are_removed() {
        // Process ids above the kernel's limit (2^22) are never in use.
        let dead = std::env::temp_dir().join(format!("{DATA_DIR_PREFIX}4194305-test"));
        let mine = tempfile::Builder::new()
            .prefix(&format!("{DATA_DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .unwrap();
        fs::create_dir_all(dead.join("etcd")).unwrap();
        let removed = remove_stale_data_dirs();
        assert!(removed.contains(&dead), "{removed:?}");
        assert!(!dead.exists());
        assert!(mine.path().exists());
    }
}
