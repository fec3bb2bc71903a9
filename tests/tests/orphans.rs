//! A test process killed with SIGKILL, so that no destructor and no exit
//! handler runs, still leaves no etcd or kube-apiserver behind; its data
//! folder is removed by the next harness that looks.
//!
//! The test runs itself again as a child process (the same test binary,
//! this test only, with `PROBE_ENV` set): the child starts a control plane,
//! prints its process ids and data folder, and waits to be killed.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use openmodel_tests::{ControlPlane, is_running, remove_stale_data_dirs};

const PROBE_ENV: &str = "OPENMODEL_TESTS_ORPHAN_PROBE";
const TEST_NAME: &str = "a_sigkilled_test_process_leaves_no_control_plane_behind";

#[tokio::test]
async fn a_sigkilled_test_process_leaves_no_control_plane_behind() -> Result<()> {
    if std::env::var_os(PROBE_ENV).is_some() {
        return probe().await;
    }

    let mut child = Command::new(std::env::current_exe()?)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running the test binary again as the probe")?;
    let stdout = child.stdout.take().context("the probe's stdout")?;
    let mut report = None;
    let mut output = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        // libtest may have written "test <name> ... " on the same line.
        if let Some((_, rest)) = line.split_once("PROBE ") {
            report = Some(rest.to_string());
            break;
        }
        output.push(line);
    }
    let Some(report) = report else {
        let status = child.wait()?;
        bail!(
            "the probe ended ({status}) without starting a control plane:\n{}",
            output.join("\n")
        );
    };
    let (pids, data_dir) = report.split_once(' ').context("PROBE <pids> <dir>")?;
    let pids: Vec<u32> = pids
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("process ids")?;
    let data_dir = PathBuf::from(data_dir);
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver: {pids:?}");
    assert!(pids.iter().all(|&pid| is_running(pid)));

    child.kill()?; // SIGKILL
    child.wait()?;

    let started = Instant::now();
    while pids.iter().any(|&pid| is_running(pid)) {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("still running 10 s after the test process was killed: {pids:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        data_dir.exists(),
        "nothing could have removed {data_dir:?} yet"
    );
    let removed = remove_stale_data_dirs();
    assert!(removed.contains(&data_dir), "{removed:?}");
    assert!(!data_dir.exists());
    Ok(())
}

/// The child's side: start a control plane, report it, wait for SIGKILL.
async fn probe() -> Result<()> {
    let control_plane = ControlPlane::start().await?;
    let pids: Vec<String> = control_plane
        .process_ids()
        .iter()
        .map(u32::to_string)
        .collect();
    println!(
        "PROBE {} {}",
        pids.join(","),
        control_plane.data_dir().display()
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    bail!("the probe was not killed within 120 s")
}
