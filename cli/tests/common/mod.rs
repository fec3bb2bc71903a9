//! Runs the real `openmodel` binary against ledger files in a temporary folder.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const ORIGIN: &str = "cli.test/openmodel";

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }
}

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openmodel"))
}

impl Workspace {
    /// A folder with a fresh ledger (`ledger.sqlite`, key `key`, `key.pub`).
    pub fn new() -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        ws.run(&[
            "ledger",
            "init",
            "--origin",
            ORIGIN,
            "--key-file",
            "key",
            "--cluster",
            "test",
        ])
        .ok();
        ws
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn ledger(&self) -> PathBuf {
        self.path("ledger.sqlite")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("OPENMODEL_LEDGER", self.ledger())
            .env_remove("OPENMODEL_LEDGER_KEY_FILE")
            .env_remove("OPENMODEL_LEDGER_KEY")
            .env_remove("OPENMODEL_SERVER");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            // It failed before reading its input; its output says why.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
        Run::from(child.wait_with_output().unwrap())
    }

    pub fn vkey(&self) -> String {
        std::fs::read_to_string(self.path("key.pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Records entries (JSON lines) and returns their indexes.
    pub fn record(&self, lines: &[String]) -> Vec<u64> {
        let out = self
            .run_with_stdin(
                &["audit", "record", "--jsonl", "--key-file", "key"],
                &(lines.join("\n") + "\n"),
            )
            .ok();
        out.lines().map(|l| l.parse().unwrap()).collect()
    }
}

/// A `weights.verified` entry as JSON.
pub fn weights_json(ns: &str, name: &str, n: u64) -> String {
    format!(
        r#"{{"v":1,"kind":"weights.verified","cluster":"test","source":"controller","actor":null,"dedupeKey":"{ns}/{name}/{n}","object":{{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel","namespace":"{ns}","name":"{name}"}},"data":{{"digest":"sha256:{n:064x}","source":"file:///m/{name}"}}}}"#
    )
}

/// A `spec.changed` entry by `user` as JSON.
pub fn change_json(ns: &str, name: &str, user: &str, replicas: u64) -> String {
    format!(
        r#"{{"v":1,"kind":"spec.changed","cluster":"test","source":"admission","actor":{{"username":"{user}","groups":["dev"]}},"object":{{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel","namespace":"{ns}","name":"{name}"}},"data":{{"operation":"UPDATE","patch":[{{"op":"replace","path":"/spec/runtime/replicas","value":{replicas}}}]}}}}"#
    )
}
