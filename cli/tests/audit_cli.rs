//! The real `openmodel` binary against a live ledger service
//! (`openmodel_ledger::service`, in-process) on a real control plane
//! (etcd + kube-apiserver from the harness): bearer tokens checked by
//! TokenReview, RBAC on `openmodels/audit`, TLS.
//!
//! A scripted history, appended through the service as the operator's
//! service account, and the four compliance questions of docs/compliance.md
//! asked through `--server ... -o json`: the answers must be exactly what
//! the script did. Around them: the proofs the CLI checks (a key pinned on
//! first use, a fork served by a second service under the same key, a key
//! that changed), the errors a user meets (no token, a refused token, a
//! kubeconfig with a client certificate, no permission), and the binary as
//! `kubectl openmodel` (through a symlink and through kubectl itself).
//!
//! Needs the control-plane binaries (`scripts/build-control-plane.sh`); the
//! tests fail, loudly, without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use openmodel_ledger::entry::{Entry, Timestamp};
use openmodel_ledger::note::Signer;
use openmodel_ledger_service::client::{Credentials, append_request};
use openmodel_tests::audit_access::{Grant, audit_reader};
use openmodel_tests::{
    ControlPlane, LEDGER_ORIGIN, LedgerService, bin_dir, create_namespace, ledger_token,
    service_account_user,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Exit codes of the CLI (see its --help).
const VERIFICATION_FAILED: i32 = 1;
const FORK: i32 = 3;
const ERROR: i32 = 4;

async fn control_plane() -> &'static ControlPlane {
    ControlPlane::shared()
        .await
        .unwrap_or_else(|err| panic!("starting the control plane: {err}"))
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Its standard output, once it succeeded.
    fn ok(self) -> Result<String> {
        ensure!(
            self.code == 0,
            "openmodel failed ({}):\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self.stdout)
    }

    /// Its standard output as JSON, once it succeeded.
    fn json(self) -> Result<Value> {
        let text = self.ok()?;
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
    }

    /// Its standard error, once it failed with `code`.
    fn failed(self, code: i32) -> Result<String> {
        ensure!(
            self.code == code,
            "expected exit code {code}, got {}:\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        ensure!(!self.stderr.contains("panicked"), "{}", self.stderr);
        Ok(self.stderr)
    }
}

/// A user of the CLI: a home folder of their own (config folder, no
/// kubeconfig unless one is written) and how they reach the service.
struct User {
    home: TempDir,
    server: String,
    ca_file: PathBuf,
    token: Option<String>,
}

impl User {
    fn new(service: &LedgerService, token: Option<&str>) -> Result<User> {
        let home = tempfile::tempdir()?;
        let ca_file = home.path().join("ledger-ca.crt");
        std::fs::write(&ca_file, service.ca_pem())?;
        Ok(User {
            home,
            server: service.grpc_endpoint(),
            ca_file,
            token: token.map(str::to_owned),
        })
    }

    /// The same person (same config folder) pointed at another service.
    fn switch_to(&mut self, service: &LedgerService) -> Result<()> {
        self.server = service.grpc_endpoint();
        std::fs::write(&self.ca_file, service.ca_pem())?;
        Ok(())
    }

    fn config_dir(&self) -> PathBuf {
        self.home.path().join(".config").join("openmodel")
    }

    /// `program args…` in a clean environment: this user's home, no
    /// kubeconfig, no OPENMODEL_* variables but the server's address, CA
    /// and token.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(self.home.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("OPENMODEL_SERVER", &self.server)
            .env("OPENMODEL_CA_FILE", &self.ca_file);
        if let Some(token) = &self.token {
            command.env("OPENMODEL_TOKEN", token);
        }
        command
    }

    async fn run_command(command: Command) -> Result<Run> {
        let mut command = command;
        let out = tokio::task::spawn_blocking(move || command.output()).await??;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `openmodel args…`.
    async fn run(&self, args: &[&str]) -> Result<Run> {
        Self::run_command(self.command(Path::new(env!("CARGO_BIN_EXE_openmodel")), args)).await
    }
}

/// `sha256:<n repeated>`: a digest the script names by number.
fn digest(n: u8) -> String {
    format!("sha256:{}", hex(n))
}

fn hex(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// One scripted event: an entry about `namespace/name` as JSON (without
/// time: the ledger assigns it).
fn event(
    namespace: &str,
    name: &str,
    generation: i64,
    actor: Option<&str>,
    kind: &str,
    data: Value,
) -> Entry {
    let (source, actor) = match actor {
        Some(user) => (
            "admission",
            json!({"username": user, "groups": ["ml-team"]}),
        ),
        None => ("controller", Value::Null),
    };
    let entry = json!({
        "v": 1, "kind": kind, "cluster": "test-cluster", "source": source, "actor": actor,
        "object": {"apiVersion": "serving.openmodel.dev/v1alpha1", "kind": "OpenModel",
                   "namespace": namespace, "name": name, "uid": format!("uid-{name}"),
                   "generation": generation},
        "data": data,
    });
    Entry::parse_draft(entry.to_string().as_bytes()).expect("scripted entries are valid")
}

fn dataset(name: &str, uri: &str, digest: Option<&str>, role: &str) -> Value {
    let mut d = json!({"name": name, "uri": uri, "role": role});
    if let Some(digest) = digest {
        d["digest"] = digest.into();
    }
    d
}

/// A logged event: its index and the time the ledger gave it.
#[derive(Clone, Copy, Debug)]
struct Logged {
    index: u64,
    time: Timestamp,
}

/// One test's world: a namespace, a ledger service that the operator's
/// service account may append to, and an auditor allowed to read it all.
struct World {
    namespace: String,
    service: LedgerService,
    operator: String,
    auditor: String,
}

impl World {
    async fn new(test: &str) -> Result<World> {
        let admin = control_plane().await.client()?;
        let namespace = create_namespace(&admin, test).await?;
        let operator = ledger_token(&admin, &namespace, "operator").await?;
        let appenders = vec![service_account_user(&namespace, "operator")];
        let service = LedgerService::start(admin.clone(), vec![], appenders).await?;
        let auditor = audit_reader(&admin, &namespace, "auditor", Grant::Cluster).await?;
        Ok(World {
            namespace,
            service,
            operator,
            auditor,
        })
    }

    /// Appends `entry` through the service as the operator.
    async fn append(&self, entry: Entry) -> Result<Logged> {
        let mut client = self
            .service
            .client(Credentials::token(&self.operator)?)
            .await?;
        let receipt = client.append(append_request(&entry)?).await?.into_inner();
        Ok(Logged {
            index: receipt.index,
            time: Timestamp::parse(&receipt.time)?,
        })
    }
}

/// The indexes of the entries of a `log -o json` answer.
fn indexes(page: &Value) -> Vec<u64> {
    page["entries"]
        .as_array()
        .map(|es| es.iter().filter_map(|e| e["index"].as_u64()).collect())
        .unwrap_or_default()
}

/// `(namespace/name, digest, [dataset names])` of an inventory answer.
fn live(inventory: &Value) -> Vec<(String, String, Vec<String>)> {
    inventory["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or("")
                ),
                m["digest"]["digest"].as_str().unwrap_or("-").to_owned(),
                m["datasets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| d["name"].as_str().unwrap_or("").to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn just_after(t: Timestamp) -> String {
    Timestamp(t.0 + 1).to_string()
}

/// A history being scripted through the service: what it logged, by index.
struct Script<'a> {
    world: &'a World,
    logged: BTreeMap<u64, Logged>,
}

impl Script<'_> {
    /// The operator records `kind` about `name` at `generation`.
    async fn record(
        &mut self,
        name: &str,
        generation: i64,
        kind: &str,
        data: Value,
    ) -> Result<Logged> {
        let entry = event(&self.world.namespace, name, generation, None, kind, data);
        let logged = self.world.append(entry).await?;
        self.logged.insert(logged.index, logged);
        Ok(logged)
    }

    /// `user` changes `name`'s spec by `patch`: the webhook records who
    /// asked (returned), then the controller what was stored.
    async fn change(
        &mut self,
        name: &str,
        generation: i64,
        user: &str,
        operation: &str,
        patch: Value,
    ) -> Result<Logged> {
        let data = json!({"operation": operation, "patch": patch});
        let asked = event(
            &self.world.namespace,
            name,
            generation,
            Some(user),
            "spec.changed",
            data.clone(),
        );
        let logged = self.world.append(asked).await?;
        self.logged.insert(logged.index, logged);
        self.record(name, generation, "spec.changed", data).await?;
        Ok(logged)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_compliance_questions_are_answered_with_proofs() -> Result<()> {
    let world = World::new("audit_cli_questions").await?;
    let ns = world.namespace.as_str();
    let model = |name: &str| format!("{ns}/{name}");
    let mut script = Script {
        world: &world,
        logged: BTreeMap::new(),
    };
    let pause = || tokio::time::sleep(Duration::from_millis(20));
    let (ms_marco, nq, pairs, squad) = (
        "hf://datasets/microsoft/ms_marco@c0ffee",
        "hf://datasets/google/nq@1",
        "s3://corpora/rerank-pairs",
        "hf://datasets/rajpurkar/squad@2",
    );
    let ms_marco_digest = digest(0xd1);
    let ms_marco_set = dataset("ms_marco", ms_marco, Some(&ms_marco_digest), "training");
    let nq_set = dataset("nq", nq, None, "evaluation");
    let pairs_set = dataset("pairs", pairs, None, "fine-tuning");
    let squad_set = dataset("squad", squad, None, "evaluation");
    let weights = |n: u8, source: &str| json!({"digest": digest(n), "source": source});
    let rollout = |n: u8, replicas: u32| json!({"digest": digest(n), "replicas": replicas});

    // Phase 1: minilm (by alice) and reranker (by bob) created and rolled out.
    let spec = json!({"model": {"digest": digest(1)}, "runtime": {"replicas": 1},
                      "provenance": {"datasets": [ms_marco_set, nq_set]}});
    let created_minilm = script
        .change(
            "minilm",
            1,
            "alice",
            "CREATE",
            json!([{"op": "add", "path": "/spec", "value": spec}]),
        )
        .await?;
    let ms_marco_ref = script
        .record("minilm", 1, "dataset.referenced", ms_marco_set.clone())
        .await?;
    let nq_ref = script
        .record("minilm", 1, "dataset.referenced", nq_set.clone())
        .await?;
    let minilm_verified_1 = script
        .record("minilm", 1, "weights.verified", weights(1, "hf://minilm@1"))
        .await?;
    let minilm_deployed_1 = script
        .record("minilm", 1, "model.deployed", rollout(1, 1))
        .await?;
    let spec = json!({"model": {"digest": digest(2)}, "provenance": {"datasets": [pairs_set]}});
    let created_reranker = script
        .change(
            "reranker",
            1,
            "bob",
            "CREATE",
            json!([{"op": "add", "path": "/spec", "value": spec}]),
        )
        .await?;
    script
        .record("reranker", 1, "dataset.referenced", pairs_set.clone())
        .await?;
    script
        .record(
            "reranker",
            1,
            "weights.verified",
            weights(2, "s3://models/rr@1"),
        )
        .await?;
    let t1 = script
        .record("reranker", 1, "model.deployed", rollout(2, 2))
        .await?
        .time;
    pause().await;

    // Phase 2: bob swaps minilm's weights and its evaluation set; alice adds legacy.
    let patch = json!([
        {"op": "replace", "path": "/spec/model/digest", "value": digest(3)},
        {"op": "remove", "path": "/spec/provenance/datasets/1"},
        {"op": "add", "path": "/spec/provenance/datasets/-", "value": squad_set}]);
    let changed_minilm = script.change("minilm", 2, "bob", "UPDATE", patch).await?;
    let squad_ref = script
        .record("minilm", 2, "dataset.referenced", squad_set.clone())
        .await?;
    script
        .record("minilm", 2, "weights.verified", weights(3, "hf://minilm@2"))
        .await?;
    let minilm_deployed_3 = script
        .record("minilm", 2, "model.deployed", rollout(3, 1))
        .await?;
    let spec = json!({"model": {"digest": digest(4)}});
    let created_legacy = script
        .change(
            "legacy",
            1,
            "alice",
            "CREATE",
            json!([{"op": "add", "path": "/spec", "value": spec}]),
        )
        .await?;
    script
        .record(
            "legacy",
            1,
            "weights.verified",
            weights(4, "file:///models/legacy"),
        )
        .await?;
    let t2 = script
        .record("legacy", 1, "model.deployed", rollout(4, 1))
        .await?
        .time;
    pause().await;

    // Phase 3: reranker retired; alice scales minilm.
    let retired = json!({"reason": "the OpenModel was deleted", "lastDigest": digest(2)});
    script
        .record("reranker", 1, "model.retired", retired)
        .await?;
    let patch = json!([{"op": "replace", "path": "/spec/runtime/replicas", "value": 3}]);
    let scaled_minilm = script.change("minilm", 3, "alice", "UPDATE", patch).await?;
    let end = script.logged.values().last().context("logged")?.time;
    let size = script.logged.len() as u64 + 1;
    // Five changes, each logged as asked and as stored.
    let spec_changes = 2 * 5;

    let auditor = User::new(&world.service, Some(&world.auditor))?;

    // The first answer pins the log's key, read from the log itself, loudly.
    let run = auditor
        .run(&["audit", "log", "--kind", "ledger.key", "-o", "json"])
        .await?;
    ensure!(
        run.stderr
            .contains("NOTICE: trusting the key of ledger.test/openmodel on first use"),
        "{}",
        run.stderr
    );
    let pinned =
        std::fs::read_to_string(auditor.config_dir().join("keys/ledger.test%2Fopenmodel"))?;
    assert_eq!(pinned.trim(), world.service.verifier().to_string());
    assert_eq!(indexes(&run.json()?), [0]);

    // 1. Which weights served minilm between t1 and the end: the digest live
    //    at t1, then every rollout in the window.
    let at_t1 = auditor
        .run(&[
            "audit",
            "inventory",
            "--at",
            &t1.to_string(),
            "--model",
            &model("minilm"),
            "-o",
            "json",
        ])
        .await?
        .json()?;
    assert_eq!(at_t1["models"][0]["digest"]["digest"], digest(1));
    assert_eq!(
        at_t1["models"][0]["digest"]["index"],
        minilm_deployed_1.index
    );
    let rollouts = auditor
        .run(&[
            "audit",
            "log",
            "--model",
            &model("minilm"),
            "--kind",
            "model.deployed",
            "--since",
            &just_after(t1),
            "--until",
            &just_after(end),
            "-o",
            "json",
        ])
        .await?
        .json()?;
    assert_eq!(indexes(&rollouts), [minilm_deployed_3.index]);
    assert_eq!(rollouts["entries"][0]["entry"]["data"]["digest"], digest(3));
    let all_rollouts = auditor
        .run(&[
            "audit",
            "log",
            "--model",
            &model("minilm"),
            "--kind",
            "model.deployed",
            "-o",
            "json",
        ])
        .await?
        .json()?;
    assert_eq!(
        indexes(&all_rollouts),
        [minilm_deployed_1.index, minilm_deployed_3.index]
    );
    // The same weights by digest: where they were verified and rolled out.
    let by_digest = auditor
        .run(&["audit", "log", "--digest", &digest(1), "-o", "json"])
        .await?
        .json()?;
    assert_eq!(
        indexes(&by_digest),
        [minilm_verified_1.index, minilm_deployed_1.index]
    );

    // 2. Which datasets lie behind minilm: now, and at t1.
    let now = auditor
        .run(&[
            "audit",
            "inventory",
            "--model",
            &model("minilm"),
            "-o",
            "json",
        ])
        .await?
        .json()?;
    let datasets = &now["models"][0]["datasets"];
    assert_eq!(datasets.as_array().map(Vec::len), Some(2), "{now}");
    assert_eq!(datasets[0]["name"], "ms_marco");
    assert_eq!(datasets[0]["uri"], ms_marco);
    assert_eq!(datasets[0]["digest"], ms_marco_digest.as_str());
    assert_eq!(datasets[0]["entry"], ms_marco_ref.index);
    assert_eq!(datasets[1]["name"], "squad");
    assert_eq!(datasets[1]["entry"], squad_ref.index);
    assert_eq!(live(&at_t1)[0].2, ["ms_marco", "nq"]);
    assert_eq!(at_t1["models"][0]["datasets"][1]["entry"], nq_ref.index);
    // Every model that ever referenced a dataset.
    let users_of_nq = auditor
        .run(&["audit", "log", "--dataset", nq, "-o", "json"])
        .await?
        .json()?;
    assert_eq!(indexes(&users_of_nq), [nq_ref.index]);

    // 3. Who changed what, when.
    let changes = auditor
        .run(&["audit", "log", "--kind", "spec.changed", "-o", "json"])
        .await?
        .json()?;
    let entries = changes["entries"].as_array().context("entries")?;
    assert_eq!(entries.len(), spec_changes, "{changes}");
    // Those with an actor say who asked; the controller's, what was stored.
    let said: Vec<(u64, String, String, String)> = entries
        .iter()
        .filter(|e| !e["entry"]["actor"].is_null())
        .map(|e| {
            let entry = &e["entry"];
            (
                e["index"].as_u64().unwrap_or(u64::MAX),
                entry["time"].as_str().unwrap_or("").to_owned(),
                entry["actor"]["username"].as_str().unwrap_or("").to_owned(),
                entry["object"]["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let did: Vec<(u64, String, String, String)> = [
        (created_minilm, "alice", "minilm"),
        (created_reranker, "bob", "reranker"),
        (changed_minilm, "bob", "minilm"),
        (created_legacy, "alice", "legacy"),
        (scaled_minilm, "alice", "minilm"),
    ]
    .into_iter()
    .map(|(l, who, what)| (l.index, l.time.to_string(), who.to_owned(), what.to_owned()))
    .collect();
    assert_eq!(said, did);
    assert_eq!(
        changes["entries"][4]["entry"]["data"]["patch"][0],
        json!({"op": "replace", "path": "/spec/model/digest", "value": digest(3)})
    );
    let by_bob = auditor
        .run(&["audit", "log", "--actor", "bob", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(
        indexes(&by_bob),
        [created_reranker.index, changed_minilm.index]
    );
    let csv = auditor
        .run(&["audit", "log", "--actor", "alice", "-o", "csv"])
        .await?
        .ok()?;
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");
    let table = auditor.run(&["audit", "log", "--actor", "bob"]).await?;
    ensure!(
        table
            .stderr
            .contains("each entry's inclusion proof checked"),
        "{}",
        table.stderr
    );

    // 4. What was live at t1, at t2 and now.
    let inventory = async |at: Option<&str>| -> Result<Vec<(String, String, Vec<String>)>> {
        let mut args = vec!["audit", "inventory", "-o", "json"];
        args.extend(at.map(|at| ["--at", at]).into_iter().flatten());
        Ok(live(&auditor.run(&args).await?.json()?))
    };
    let entry = |name: &str, d: u8, datasets: &[&str]| {
        (
            model(name),
            digest(d),
            datasets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        inventory(Some(&t1.to_string())).await?,
        [
            entry("minilm", 1, &["ms_marco", "nq"]),
            entry("reranker", 2, &["pairs"])
        ]
    );
    assert_eq!(
        inventory(Some(&t2.to_string())).await?,
        [
            entry("legacy", 4, &[]),
            entry("minilm", 3, &["ms_marco", "squad"]),
            entry("reranker", 2, &["pairs"])
        ]
    );
    assert_eq!(
        inventory(None).await?,
        [
            entry("legacy", 4, &[]),
            entry("minilm", 3, &["ms_marco", "squad"])
        ]
    );
    assert!(inventory(Some("2000-01-01")).await?.is_empty());

    // Proofs: every answer moved the kept checkpoint to the whole log.
    let kept = std::fs::read_to_string(
        auditor
            .config_dir()
            .join("checkpoints/ledger.test%2Fopenmodel"),
    )?;
    ensure!(
        kept.starts_with(&format!("{LEDGER_ORIGIN}\n{size}\n")),
        "{kept}"
    );
    let shown = auditor
        .run(&[
            "audit",
            "show",
            &changed_minilm.index.to_string(),
            "-o",
            "json",
        ])
        .await?
        .json()?;
    assert_eq!(shown["entry"]["actor"]["username"], "bob");
    auditor
        .run(&[
            "audit",
            "proof",
            &squad_ref.index.to_string(),
            "--out",
            "squad.proof",
        ])
        .await?
        .ok()?;
    let vkey = world.service.verifier().to_string();
    let out = auditor
        .run(&["audit", "verify", "--proof", "squad.proof", "--key", &vkey])
        .await?
        .ok()?;
    ensure!(
        out.contains(&format!(
            "VERIFIED: entry {} (dataset.referenced)",
            squad_ref.index
        )),
        "{out}"
    );
    // An external auditor: an export from the server, checked offline with the key alone.
    let out = auditor.run(&["audit", "export", "bundle"]).await?.ok()?;
    ensure!(out.contains(&format!("exported {size} entries")), "{out}");
    let out = auditor
        .run(&["audit", "verify", "--bundle", "bundle", "--key", &vkey])
        .await?
        .ok()?;
    ensure!(out.contains(&format!("VERIFIED: {size} entries")), "{out}");
    let jsonl = std::fs::read_to_string(auditor.home.path().join("bundle/entries.jsonl"))?;
    assert_eq!(jsonl.lines().count() as u64, size);
    // The whole log against the server.
    let out = auditor.run(&["audit", "verify"]).await?.ok()?;
    ensure!(
        out.contains(&format!("VERIFIED: all {size} entries")),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_history_under_the_same_key_is_a_fork() -> Result<()> {
    let admin = control_plane().await.client()?;
    let namespace = create_namespace(&admin, "audit_cli_fork").await?;
    let token = audit_reader(&admin, &namespace, "auditor", Grant::Cluster).await?;
    let weights = |n: u8| {
        event(
            &namespace,
            "m",
            1,
            None,
            "weights.verified",
            json!({"digest": digest(n), "source": "hf://m@1"}),
        )
    };
    let signer = Signer::generate(LEDGER_ORIGIN)?;
    let honest = LedgerService::start_signed(
        admin.clone(),
        signer.clone(),
        vec![weights(1), weights(2), weights(3)],
        vec![],
    )
    .await?;
    let mut user = User::new(&honest, Some(&token))?;
    let vkey = honest.verifier().to_string();
    user.run(&["--key", &vkey, "audit", "log", "-o", "json"])
        .await?
        .json()?;
    let kept_path = user
        .config_dir()
        .join("checkpoints/ledger.test%2Fopenmodel");
    let kept = std::fs::read_to_string(&kept_path)?;
    ensure!(kept.starts_with(&format!("{LEDGER_ORIGIN}\n4\n")), "{kept}");

    // The key's holder serves another history of the same size…
    let same_size = LedgerService::start_signed(
        admin.clone(),
        signer.clone(),
        vec![weights(7), weights(8), weights(9)],
        vec![],
    )
    .await?;
    user.switch_to(&same_size)?;
    let stderr = user.run(&["audit", "log"]).await?.failed(FORK)?;
    for needle in [
        "FORK",
        "two signed checkpoints of size 4 with different roots",
        "checkpoint seen before (kept in",
        "checkpoint served now:",
        kept.lines().nth(2).unwrap_or("?"),
    ] {
        ensure!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
    // … or a longer one that does not contain what was seen.
    let longer = LedgerService::start_signed(
        admin.clone(),
        signer.clone(),
        vec![weights(7), weights(8), weights(9), weights(10)],
        vec![],
    )
    .await?;
    user.switch_to(&longer)?;
    let stderr = user.run(&["audit", "inventory"]).await?.failed(FORK)?;
    ensure!(
        stderr.contains("does not contain the tree of size 4 seen before"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&kept_path)?,
        kept,
        "a fork never moves the kept checkpoint"
    );
    // Unchecked, the same answer goes through: the proofs are what caught it.
    let run = user
        .run(&["--no-verify", "audit", "log", "-o", "json"])
        .await?;
    ensure!(
        run.stderr.contains("WARNING: --no-verify"),
        "{}",
        run.stderr
    );
    assert_eq!(indexes(&run.json()?), [0, 1, 2, 3, 4]);

    // A log of the same name under another key: refused, pinned or passed.
    let rekeyed = LedgerService::start(admin.clone(), vec![weights(1)], vec![]).await?;
    user.switch_to(&rekeyed)?;
    let stderr = user
        .run(&["audit", "log"])
        .await?
        .failed(VERIFICATION_FAILED)?;
    ensure!(stderr.contains("did not sign"), "{stderr}");
    let other_key = rekeyed.verifier().to_string();
    let stderr = user
        .run(&["--key", &other_key, "audit", "log"])
        .await?
        .failed(VERIFICATION_FAILED)?;
    ensure!(stderr.contains("is not the key pinned"), "{stderr}");

    // The honest log still verifies, whole, against what was kept.
    user.switch_to(&honest)?;
    user.run(&["audit", "verify"]).await?.ok()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_without_a_token_or_permission_are_told_what_to_do() -> Result<()> {
    let control_plane = control_plane().await;
    let admin = control_plane.client()?;
    let namespace = create_namespace(&admin, "audit_cli_access").await?;
    let service = LedgerService::start(
        admin.clone(),
        vec![event(
            &namespace,
            "m",
            1,
            None,
            "weights.verified",
            json!({"digest": digest(1), "source": "hf://m@1"}),
        )],
        vec![],
    )
    .await?;
    let vkey = service.verifier().to_string();

    // No token anywhere: the service says UNAUTHENTICATED, the CLI says why none was sent.
    let nobody = User::new(&service, None)?;
    let stderr = nobody.run(&["audit", "log"]).await?.failed(ERROR)?;
    for needle in [
        "UNAUTHENTICATED",
        "No bearer token was sent",
        "kubectl create token",
    ] {
        ensure!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
    // A token the API server does not accept.
    let forger = User::new(&service, Some("not-a-kubernetes-token"))?;
    let stderr = forger.run(&["audit", "log"]).await?.failed(ERROR)?;
    ensure!(
        stderr.contains("UNAUTHENTICATED") && stderr.contains("The token was refused"),
        "{stderr}"
    );
    // The admin kubeconfig authenticates with a client certificate: not for the service.
    let mut admin_kubeconfig = nobody.command(
        Path::new(env!("CARGO_BIN_EXE_openmodel")),
        &["audit", "log"],
    );
    admin_kubeconfig.env("KUBECONFIG", control_plane.kubeconfig());
    let stderr = User::run_command(admin_kubeconfig).await?.failed(ERROR)?;
    for needle in ["client certificate", "--token", "kubectl create token"] {
        ensure!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }

    // Authenticated, allowed nothing: the key cannot be read from the log…
    let stranger_token = audit_reader(&admin, &namespace, "stranger", Grant::Nowhere).await?;
    let stranger = User::new(&service, Some(&stranger_token))?;
    let stderr = stranger.run(&["audit", "log"]).await?.failed(ERROR)?;
    ensure!(
        stderr.contains("PERMISSION_DENIED") && stderr.contains("pass --key"),
        "{stderr}"
    );
    // … and with the key, the entries cannot be read either.
    let stderr = stranger
        .run(&["--key", &vkey, "audit", "log"])
        .await?
        .failed(ERROR)?;
    ensure!(
        stderr.contains("PERMISSION_DENIED") && stderr.contains("openmodels/audit"),
        "{stderr}"
    );
    // A reader of one namespace reads it, and only it.
    let reader_token =
        audit_reader(&admin, &namespace, "reader", Grant::Namespace(&namespace)).await?;
    let reader = User::new(&service, Some(&reader_token))?;
    let page = reader
        .run(&[
            "--key",
            &vkey,
            "audit",
            "log",
            "--model",
            &format!("{namespace}/"),
            "-o",
            "json",
        ])
        .await?
        .json()?;
    assert_eq!(indexes(&page), [1]);
    let stderr = reader
        .run(&["--key", &vkey, "audit", "inventory"])
        .await?
        .failed(ERROR)?;
    ensure!(
        stderr.contains("PERMISSION_DENIED") && stderr.contains("cluster-wide"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_openmodel_takes_the_token_from_the_kubeconfig() -> Result<()> {
    let admin = control_plane().await.client()?;
    let namespace = create_namespace(&admin, "audit_cli_kubectl").await?;
    let token = audit_reader(&admin, &namespace, "auditor", Grant::Cluster).await?;
    let service = LedgerService::start(
        admin.clone(),
        vec![event(
            &namespace,
            "m",
            1,
            None,
            "weights.verified",
            json!({"digest": digest(1), "source": "hf://m@1"}),
        )],
        vec![],
    )
    .await?;
    let user = User::new(&service, None)?;
    // The plugin: a symlink named kubectl-openmodel on PATH.
    let plugins = user.home.path().join("bin");
    std::fs::create_dir_all(&plugins)?;
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_openmodel"),
        plugins.join("kubectl-openmodel"),
    )?;
    let kubeconfig = user.home.path().join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: auditor\n\
             clusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:6443\n\
             contexts:\n- name: auditor\n  context:\n    cluster: test\n    user: auditor\n\
             users:\n- name: auditor\n  user:\n    token: {token}\n"
        ),
    )?;

    let help = User::run_command(user.command(&plugins.join("kubectl-openmodel"), &["--help"]))
        .await?
        .ok()?;
    ensure!(help.contains("Usage: kubectl openmodel"), "{help}");

    let kubectl = bin_dir().join("kubectl");
    ensure!(
        kubectl.is_file(),
        "kubectl not found at {}: run scripts/build-control-plane.sh",
        kubectl.display()
    );
    let mut command = user.command(&kubectl, &["openmodel", "audit", "log", "-o", "json"]);
    let path = std::env::join_paths(std::iter::once(plugins.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    command.env("PATH", path).env("KUBECONFIG", &kubeconfig);
    let run = User::run_command(command).await?;
    ensure!(
        run.stderr.contains("NOTICE: trusting the key"),
        "{}",
        run.stderr
    );
    assert_eq!(indexes(&run.json()?), [0, 1]);
    Ok(())
}
