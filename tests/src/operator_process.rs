//! The `openmodel-operator` binary as its own process against the test
//! control plane: the real flags, JSON logs on stdout (kept in a file), its
//! own resident memory, and the signals a kubelet sends.
//!
//! Cargo gives the binary's path only to the operator package's own tests
//! and benches (`env!("CARGO_BIN_EXE_openmodel-operator")`), so they pass it
//! in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::operator::ledger_key;
use crate::process::{free_port, kill_group, log_tail, spawn};
use crate::{ControlPlane, Error};

type Result<T, E = Error> = std::result::Result<T, E>;

/// An operator process; killed (SIGKILL, with its process group) when
/// dropped.
pub struct OperatorProcess {
    child: Child,
    log: PathBuf,
    ledger: PathBuf,
    http: SocketAddr,
}

impl OperatorProcess {
    /// Starts `binary run` for `namespace` (watched, and where its Lease is)
    /// as `identity`, with the ledger and its key in `dir` (the key is made
    /// when missing, the ledger created on first lead), a 3 s Lease, and
    /// `/metrics` on a free loopback port. Logs go to `dir/<identity>.log`.
    pub fn start(
        binary: &Path,
        control_plane: &ControlPlane,
        namespace: &str,
        dir: &Path,
        identity: &str,
    ) -> Result<OperatorProcess> {
        if !binary.exists() {
            return Err(Error::Io {
                what: format!("finding the operator binary {}", binary.display()),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let key = dir.join("ledger.key");
        if !key.exists() {
            ledger_key(dir)?;
        }
        let ledger = dir.join("ledger.sqlite");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = dir.join(format!("{identity}.log"));
        let stdout = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let stderr = stdout
            .try_clone()
            .map_err(Error::io("sharing the operator's log file"))?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--ledger")
            .arg(&ledger)
            .arg("--ledger-key-file")
            .arg(&key)
            .args(["--create-ledger", "--cluster", "test"])
            .args(["--watch-namespace", namespace])
            .args(["--lease-namespace", namespace])
            .args(["--identity", identity])
            .args(["--lease-duration", "3", "--renew-deadline", "2"])
            .args(["--retry-period", "1"])
            .args(["--http-listen", &http.to_string()])
            .args(["--log-format", "json"])
            .env("KUBECONFIG", control_plane.kubeconfig())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = spawn(command).map_err(Error::io(format!("running {}", binary.display())))?;
        Ok(OperatorProcess {
            child,
            log,
            ledger,
            http,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ledger file it writes.
    pub fn ledger_path(&self) -> &Path {
        &self.ledger
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The peak resident set size so far (`VmHWM`), in MiB; `None` once
    /// the process is gone.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        crate::cluster_components::peak_rss_mib(self.pid())
    }

    /// The CPU time (user + system) it has used so far; `None` once the
    /// process is gone.
    pub fn cpu_time(&self) -> Option<Duration> {
        crate::cluster_components::cpu_time(self.pid())
    }

    /// Every line it has logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Its log lines as JSON objects; a line that is not one is an error
    /// quoting it.
    pub fn json_logs(&self) -> Result<Vec<Value>> {
        self.log_lines()
            .iter()
            .map(|line| {
                serde_json::from_str(line).map_err(|e| Error::Io {
                    what: format!("reading the operator's log line {line:?} as JSON"),
                    source: std::io::Error::other(e),
                })
            })
            .collect()
    }

    /// [`OperatorProcess::start`], then waits (60 s at most) until it logs
    /// `leading`: the operator of a benchmark, ready for models.
    pub async fn start_leading(
        binary: &Path,
        control_plane: &ControlPlane,
        namespace: &str,
        dir: &Path,
        identity: &str,
    ) -> Result<OperatorProcess> {
        let operator = OperatorProcess::start(binary, control_plane, namespace, dir, identity)?;
        operator
            .wait_for_log("leading", Duration::from_secs(60))
            .await?;
        Ok(operator)
    }

    /// Waits until a logged message (`fields.message` of a JSON line)
    /// equals `message`.
    pub async fn wait_for_log(&self, message: &str, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let logs = self.json_logs()?;
            if logs.iter().any(|l| l["fields"]["message"] == message) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("the operator to log {message:?}"),
                    waited: patience,
                    detail: log_tail(&self.log, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (as a kubelet does) and waits for the exit.
    pub async fn terminate(&mut self, patience: Duration) -> Result<ExitStatus> {
        // SAFETY: kill(2) with a pid this process spawned and has not reaped.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(Error::io("waiting for the operator"))?
            {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "the operator to exit after SIGTERM".into(),
                    waited: patience,
                    detail: log_tail(&self.log, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it with SIGKILL, as a crash or an evicted node would.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
