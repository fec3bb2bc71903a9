//! The rest of a cluster around a [`ControlPlane`], for scale benchmarks:
//! kube-controller-manager and kube-scheduler (built with the control plane
//! by `scripts/build-control-plane.sh`) and kwok, the kubelet simulator of
//! many fake nodes (`scripts/fetch-kwok.sh`), each as a child process with
//! its log in the control plane's data folder.
//!
//! The controller manager and the scheduler run as their own users
//! (`system:kube-controller-manager`, `system:kube-scheduler`, client
//! certificates from the control plane's CA, which Kubernetes' bootstrap
//! RBAC policy grants what they need), the controllers with their own
//! service accounts' tokens, as kubeadm runs them. kwok runs as the
//! administrator, as `kwokctl` does. None serves HTTPS (`--secure-port=0`)
//! and none elects a leader: there is one of each.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{kill_group, log_tail, spawn};
use crate::{ControlPlane, Error, bin_dir};

type Result<T, E = Error> = std::result::Result<T, E>;

/// The environment variable that names the folder holding `kwok`, instead
/// of `.cache/kwok/bin` in the workspace.
pub const KWOK_BIN_ENV: &str = "OPENMODEL_KWOK_BIN";

/// Client requests per second (and burst) for the controller manager and
/// the scheduler. Their defaults (20 and 50 per second) are sized for small
/// clusters and would make them, not the operator, the bottleneck of a
/// burst of thousands of pods; scale-test clusters raise them the same way.
pub const CLIENT_QPS: u32 = 1000;

/// The folder that holds `kwok`: `$OPENMODEL_KWOK_BIN`, or `.cache/kwok/bin`
/// in the workspace (where `scripts/fetch-kwok.sh` installs it).
pub fn kwok_bin_dir() -> PathBuf {
    crate::tool_dir(KWOK_BIN_ENV, ".cache/kwok/bin")
}

/// One cluster component running as a child process; killed with its
/// process group when dropped.
pub struct ClusterComponent {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ClusterComponent {
    /// Starts kube-controller-manager with every default controller, the
    /// control plane's service-account signing key (for the token
    /// controller) and its CA (published to each namespace as
    /// `kube-root-ca.crt`).
    pub fn controller_manager(control_plane: &ControlPlane) -> Result<ClusterComponent> {
        let kubeconfig = control_plane.user_kubeconfig("system:kube-controller-manager", &[])?;
        let pki = control_plane.data_dir().join("pki");
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--controllers=*".into(),
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                pki.join("sa.key").display()
            ),
            format!("--root-ca-file={}", pki.join("ca.crt").display()),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            format!("--kube-api-qps={CLIENT_QPS}"),
            format!("--kube-api-burst={CLIENT_QPS}"),
            "--profiling=false".into(),
        ];
        Self::spawn("kube-controller-manager", &bin_dir(), control_plane, args)
    }

    /// Starts kube-scheduler with its default profile, configured by a
    /// `KubeSchedulerConfiguration` file (the only way to set its client's
    /// rate) in the control plane's data folder.
    pub fn scheduler(control_plane: &ControlPlane) -> Result<ClusterComponent> {
        let kubeconfig = control_plane.user_kubeconfig("system:kube-scheduler", &[])?;
        let config = control_plane.data_dir().join("kube-scheduler.yaml");
        let text = format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\n\
             kind: KubeSchedulerConfiguration\n\
             clientConnection:\n  kubeconfig: {}\n  qps: {CLIENT_QPS}\n  burst: {CLIENT_QPS}\n\
             leaderElection:\n  leaderElect: false\n",
            serde_json::to_string(&kubeconfig.display().to_string()).expect("a string serializes"),
        );
        fs::write(&config, text).map_err(Error::io(format!("writing {}", config.display())))?;
        let args = vec![
            format!("--config={}", config.display()),
            "--secure-port=0".into(),
        ];
        Self::spawn("kube-scheduler", &bin_dir(), control_plane, args)
    }

    /// Starts kwok as the kubelet of every Node annotated
    /// `kwok.x-k8s.io/node: fake`, with the `Stage` documents of `config`
    /// (kwok's defaults for any resource kind the file has no stage for).
    pub fn kwok(control_plane: &ControlPlane, config: &Path) -> Result<ClusterComponent> {
        let args = vec![
            format!("--kubeconfig={}", control_plane.kubeconfig().display()),
            format!("--config={}", config.display()),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            // A kubelet's Lease (renewed every 10 s) and status heartbeats.
            // Without the flag kwok 0.7 renews no Lease and picks the stage
            // that posts node status only every 10 minutes, so the node
            // lifecycle controller declares every node lost after 50 s and
            // marks all their pods not Ready, which kwok never undoes.
            "--node-lease-duration-seconds=40".into(),
        ];
        Self::spawn("kwok", &kwok_bin_dir(), control_plane, args)
    }

    /// Starts `dir/name` with `args`, its output in `<data dir>/<name>.log`.
    fn spawn(
        name: &'static str,
        dir: &Path,
        control_plane: &ControlPlane,
        args: Vec<String>,
    ) -> Result<ClusterComponent> {
        let binary = dir.join(name);
        if !binary.is_file() {
            if name == "kwok" {
                return Err(Error::Io {
                    what: format!(
                        "kwok not found at {}: run scripts/fetch-kwok.sh to install it into \
                         .cache/kwok/bin, or set {KWOK_BIN_ENV} to a folder that holds it",
                        binary.display()
                    ),
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            return Err(Error::MissingBinary {
                binary: name,
                path: binary,
                env: crate::BIN_ENV,
            });
        }
        let log = control_plane.data_dir().join(format!("{name}.log"));
        let stdout =
            fs::File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
        let stderr = stdout
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let mut command = Command::new(&binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = spawn(command).map_err(Error::io(format!("starting {}", binary.display())))?;
        Ok(ClusterComponent { name, child, log })
    }

    /// The component's binary name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file (in the control plane's data folder, removed with it).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// An error with the end of its log if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::Exited {
                process: self.name,
                status,
                log: self.log.clone(),
                tail: log_tail(&self.log, 30),
            }),
            Ok(None) => Ok(()),
            Err(err) => Err(Error::io(format!("waiting for {}", self.name))(err)),
        }
    }
}

impl Drop for ClusterComponent {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// The CPU time (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat`; `None` once it is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(from_clock_ticks(ticks))
}

/// `ticks` of the kernel's clock (`_SC_CLK_TCK` per second) as a duration.
fn from_clock_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / per_second.max(1) as f64)
}

/// The CPU time every process on the machine has used since boot, all
/// cores together (idle and I/O wait excluded), from `/proc/stat`: the
/// difference over an interval, less the processes one measured, is what
/// everything else on the machine took.
pub fn machine_busy_time() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal; guest time is
    // already counted in user.
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, ticks)| ticks)
        .sum();
    Some(from_clock_ticks(busy))
}

/// The peak resident set size (`VmHWM`) of process `pid` so far, in MiB;
/// `None` once it is gone.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let busy = std::time::Instant::now();
        while busy.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_time(pid).unwrap() > Duration::ZERO);
        assert!(peak_rss_mib(pid).unwrap() > 0.0);
        assert!(machine_busy_time().unwrap() >= cpu_time(pid).unwrap());
        // Process ids above the kernel's limit (2^22) are never in use.
        assert_eq!(cpu_time(4_194_305), None);
        assert_eq!(peak_rss_mib(4_194_305), None);
    }

    #[test]
    fn the_default_kwok_dir_is_in_the_workspace_cache() {
        if std::env::var_os(KWOK_BIN_ENV).is_none() {
            assert!(kwok_bin_dir().ends_with(".cache/kwok/bin"));
        }
    }
}
