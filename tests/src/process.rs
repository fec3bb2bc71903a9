//! Child processes that cannot outlive the test process.
//!
//! Every control-plane process is started
//! - in its own process group, so that stopping it stops anything it forked;
//! - with `PR_SET_PDEATHSIG` = `SIGKILL`, so that the kernel kills it when the
//!   test process dies, even by `SIGKILL` or a crash, when no destructor runs.
//!
//! The death signal fires when the *thread* that forked the child exits, not
//! the process. Test threads come and go (libtest runs each test on its own
//! thread, and a shared control plane outlives the test that started it), so
//! every child is forked by one spawner thread that lives as long as the
//! process.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};
use std::thread;

use crate::Error;

type SpawnRequest = (Command, Sender<io::Result<Child>>);

/// The channel to the spawner thread, started on first use.
fn spawner() -> &'static Sender<SpawnRequest> {
    static SPAWNER: OnceLock<Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("openmodel-tests-spawner".into())
            .spawn(move || {
                // The senders live in a static, so this loop ends only with
                // the process.
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the process spawner thread");
        requests
    })
}

/// Starts `command` in a new process group, to be killed with `SIGKILL` when
/// this process dies.
pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id();
    command.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nothing
            // would ever send the signal.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply, response) = mpsc::channel();
    spawner()
        .send((command, reply))
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?;
    response
        .recv()
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?
}

/// Kills the process group that `child` leads with `SIGKILL` and reaps the
/// child. Safe to call on a child that already exited.
pub(crate) fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait()
        && let Ok(pgid) = libc::pid_t::try_from(child.id())
    {
        // SAFETY: plain system call; the group id is the id of a child we
        // started as a group leader and have not reaped yet, so it cannot
        // have been reused.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// A loopback TCP port that was free a moment ago (the kernel picks it; the
/// listener is closed again for the process that will use it).
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(Error::io("finding a free loopback port"))?;
    Ok(listener
        .local_addr()
        .map_err(Error::io("finding a free loopback port"))?
        .port())
}

/// The last `lines` lines of a log file (at most its last 64 KiB), for error
/// messages. Never fails: a missing log says so.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

/// Whether a process is still running (a zombie waiting to be reaped counts
/// as gone).
pub fn is_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may itself contain spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn spawned_children_lead_their_own_group_and_die_with_it() {
        let mut child = spawn({
            let mut c = Command::new("sleep");
            c.arg("60");
            c
        })
        .unwrap();
        let pid = child.id();
        assert!(is_running(pid));
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // Fields after the name: state, ppid, pgrp.
        assert_eq!(fields[2], pid.to_string(), "process group of {stat}");
        kill_group(&mut child);
        assert!(!is_running(pid));
        // Killing twice is harmless.
        kill_group(&mut child);
    }

    #[test]
    fn children_outlive_the_thread_that_asked_for_them() {
        let mut child = thread::spawn(|| {
            let mut c = Command::new("sleep");
            c.arg("60");
            spawn(c).unwrap()
        })
        .join()
        .unwrap();
        // Had the short-lived thread forked it, the death signal would have
        // killed it when that thread ended.
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            assert!(child.try_wait().unwrap().is_none(), "the child died");
            thread::sleep(Duration::from_millis(50));
        }
        kill_group(&mut child);
    }

    #[test]
    fn the_tail_of_a_log_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        fs::write(&log, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&log, 2), "c\nd");
        assert!(log_tail(&dir.path().join("missing.log"), 2).contains("cannot read"));
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port().unwrap();
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
