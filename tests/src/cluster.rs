//! The real single-node cluster of `scripts/cluster.sh` (control plane,
//! kubelet with containerd and runc, kube-proxy, CoreDNS) for the end-to-end
//! test, and the plain HTTP server the cluster's pods fetch model weights
//! from.
//!
//! One cluster per machine: it owns the node address (10.200.0.1 on `lo`),
//! kube-proxy's iptables rules and the bridge. [`Cluster::up`] keeps its
//! state in `target/openmodel-e2e-cluster/`, apart from the demo's; another
//! cluster already running (the demo's) is an error that says how to stop
//! it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{Error, workspace};

/// The node's address (`OPENMODEL_CLUSTER_IP` of `scripts/cluster.sh`).
pub const NODE_IP: &str = "10.200.0.1";

/// A started cluster; stopped (`scripts/cluster.sh down --purge`) on drop,
/// or, when the test failed, stopped with its state and logs kept.
pub struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// Starts the cluster (`scripts/cluster.sh up`), with the project's
    /// images from `.cache/images` (`scripts/build-images.sh`) imported.
    pub fn up() -> Result<Cluster, Error> {
        let images = workspace().join(".cache/images/openmodel-server.oci.tar");
        if !images.is_file() {
            return Err(Error::Cluster(format!(
                "{} is missing: run scripts/build-images.sh --profile debug (scripts/test.sh does)",
                images.display()
            )));
        }
        let dir = workspace().join("target/openmodel-e2e-cluster");
        let cluster = Cluster {
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
        };
        if cluster.other_cluster_runs()? {
            return Err(Error::Cluster(format!(
                "another cluster's API server answers on {NODE_IP}:6443 (the demo's?): stop it \
                 with scripts/demo.sh down (or scripts/cluster.sh down) in its checkout"
            )));
        }
        // A cluster left by an interrupted run is stopped first.
        cluster.script(&["down", "--purge"])?;
        cluster.script(&["up"])?;
        Ok(cluster)
    }

    /// Whether a cluster other than this one (a demo's, another checkout's)
    /// holds the node: the node address is on this machine and an API server
    /// answers there, while this cluster's own API server is not running.
    /// (Connecting alone proves nothing: a sandbox's network may accept
    /// connections to any address it does not have.)
    fn other_cluster_runs(&self) -> Result<bool, Error> {
        let address_is_here = TcpListener::bind((NODE_IP, 0)).is_ok();
        let own = std::fs::read_to_string(self.dir.join("pids/kube-apiserver.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
            .is_some_and(crate::is_running);
        let api_server: std::net::SocketAddr = format!("{NODE_IP}:6443")
            .parse()
            .map_err(|e| Error::Cluster(format!("{NODE_IP}:6443: {e}")))?;
        Ok(address_is_here
            && !own
            && std::net::TcpStream::connect_timeout(&api_server, Duration::from_millis(500))
                .is_ok())
    }

    fn script(&self, args: &[&str]) -> Result<Output, Error> {
        let output = Command::new(workspace().join("scripts/cluster.sh"))
            .args(args)
            .env("OPENMODEL_CLUSTER_DIR", &self.dir)
            .env("OPENMODEL_CLUSTER_IP", NODE_IP)
            .output()
            .map_err(Error::io("running scripts/cluster.sh"))?;
        if !output.status.success() {
            return Err(Error::Cluster(format!(
                "scripts/cluster.sh {} failed ({}):\n{}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(output)
    }

    /// The administrator's kubeconfig (system:masters).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The state folder (logs in `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client as the administrator.
    pub async fn client(&self) -> Result<Client, Error> {
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&self.kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        Ok(Client::try_from(config)?)
    }

    /// A kubeconfig for a person `name` in `groups` (a client certificate
    /// from the cluster's CA).
    pub fn user(&self, name: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let mut args = vec!["user", name];
        args.extend_from_slice(groups);
        let output = self.script(&args)?;
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        ))
    }

    /// kubectl as the administrator.
    pub fn kubectl(&self) -> Command {
        kubectl(&self.kubeconfig)
    }
}

/// kubectl (`.cache/k8s/bin/kubectl`) with `kubeconfig`.
pub fn kubectl(kubeconfig: &Path) -> Command {
    let mut command = Command::new(crate::bin_dir().join("kubectl"));
    command.arg("--kubeconfig").arg(kubeconfig);
    command
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let args: &[&str] = if std::thread::panicking() {
            eprintln!(
                "the cluster's state and logs are kept in {}",
                self.dir.display()
            );
            &["down"]
        } else {
            &["down", "--purge"]
        };
        if let Err(err) = self.script(args) {
            eprintln!("stopping the cluster: {err}");
        }
    }
}

/// A binary of this workspace built next to the running test
/// (`target/<profile>/<name>`; `cargo test --workspace` builds them all).
pub fn workspace_binary(name: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(Error::io("finding the test binary"))?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Cluster(format!(
            "{} is missing: build it with cargo build --workspace (cargo test --workspace does)",
            path.display()
        )))
    }
}

/// A plain HTTP server (Python's `http.server`) on the node's address,
/// serving a folder, as a model store the pods fetch from.
pub struct HttpFolder {
    child: Child,
    url: String,
}

impl HttpFolder {
    /// Serves `dir` at `http://NODE_IP:<free port>/`, once it answers.
    pub fn serve(dir: &Path) -> Result<HttpFolder, Error> {
        let port = TcpListener::bind((NODE_IP, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(Error::io(format!("finding a free port on {NODE_IP}")))?
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", NODE_IP, &port.to_string()])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("starting python3 -m http.server"))?;
        let server = HttpFolder {
            child,
            url: format!("http://{NODE_IP}:{port}/"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect((NODE_IP, port)).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err(Error::Timeout {
                    what: format!("the HTTP server on {NODE_IP}:{port}"),
                    waited: started.elapsed(),
                    detail: "python3 -m http.server did not listen".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Its base URL, ending in `/`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for HttpFolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
