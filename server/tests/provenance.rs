//! The ledger index of the `weights.verified` entry, end to end: from
//! `--ledger-index`, and from a downward-API annotations file
//! (`--pod-annotations`) that changes while the server runs, written the
//! way the kubelet writes it (in-process); from `OPENMODEL_LEDGER_INDEX` and
//! `OPENMODEL_POD_ANNOTATIONS`, the flags' refusals and help (the binary). Every ModelInfer response carries it as
//! the int64 parameter `ledger_index` and ModelMetadata as the header
//! `ledger-index`, both next to the digest, and neither while it is unknown.

mod common;

use common::server::*;
use common::*;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use openmodel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::{ModelMetadataRequest, ModelMetadataResponse};
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long a changed annotation may take to be served: the server rereads
/// the file every 2 s; the rest is slack for a busy machine.
const PICKED_UP_WITHIN: Duration = Duration::from_secs(15);

/// Annotations every pod has, none of them ours.
const OTHER_ANNOTATIONS: &str = concat!(
    "kubectl.kubernetes.io/restartedAt=\"2025-01-01T00:00:00Z\"\n",
    "kubernetes.io/config.seen=\"2025-01-01T00:00:00.000000000Z\"\n",
    "kubernetes.io/config.source=\"api\"\n",
    "note=\"a \\\"quoted\\\" value\\nover two lines, caf\u{e9}\"",
);

/// The annotations file with the operator's annotation set to `value`.
fn annotated(value: &str) -> String {
    format!("{OTHER_ANNOTATIONS}\nserving.openmodel.dev/weights-entry=\"{value}\"")
}

/// A downward-API volume as the kubelet writes it: `annotations` links to
/// `..data/annotations`, `..data` to a folder with the current content, and
/// every update writes a new folder and swaps `..data` atomically.
struct PodInfo {
    dir: TempDir,
    updates: u32,
}

impl PodInfo {
    fn new(content: &str) -> PodInfo {
        let mut podinfo = PodInfo {
            dir: tempfile::tempdir().unwrap(),
            updates: 0,
        };
        podinfo.write(content);
        symlink("..data/annotations", podinfo.file()).unwrap();
        podinfo
    }

    /// The path the server is given.
    fn file(&self) -> PathBuf {
        self.dir.path().join("annotations")
    }

    fn write(&mut self, content: &str) {
        self.updates += 1;
        let dir = self.dir.path();
        let version = format!("..2025_01_01_00_00_00.{:09}", self.updates);
        std::fs::create_dir(dir.join(&version)).unwrap();
        std::fs::write(dir.join(&version).join("annotations"), content).unwrap();
        symlink(&version, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        if self.updates > 1 {
            let previous = format!("..2025_01_01_00_00_00.{:09}", self.updates - 1);
            std::fs::remove_dir_all(dir.join(previous)).unwrap();
        }
    }
}

/// What the server says about the served weights: the ModelInfer
/// parameters `model_digest` and `ledger_index`, and the ModelMetadata
/// headers `model-digest` and `ledger-index`.
#[derive(Debug, PartialEq)]
struct Provenance {
    infer_digest: Option<String>,
    infer_index: Option<i64>,
    metadata_digest: Option<String>,
    metadata_index: Option<String>,
}

impl Provenance {
    fn expected(index: Option<u64>) -> Provenance {
        Provenance {
            infer_digest: Some(digest()),
            infer_index: index.map(|i| i as i64),
            metadata_digest: Some(digest()),
            metadata_index: index.map(|i| i.to_string()),
        }
    }
}

async fn provenance(client: &mut GrpcInferenceServiceClient<Channel>) -> Provenance {
    let infer = client
        .model_infer(infer_request(text_input(&[b"which weights answered?"])))
        .await
        .unwrap()
        .into_inner();
    let param = |name: &str| infer.parameters.get(name)?.parameter_choice.clone();
    let infer_digest = match param("model_digest") {
        None => None,
        Some(ParameterChoice::StringParam(d)) => Some(d),
        Some(other) => panic!("model_digest must be a string_param, not {other:?}"),
    };
    let infer_index = match param("ledger_index") {
        None => None,
        Some(ParameterChoice::Int64Param(i)) => Some(i),
        Some(other) => panic!("ledger_index must be an int64_param, not {other:?}"),
    };
    let metadata: tonic::Response<ModelMetadataResponse> = client
        .model_metadata(ModelMetadataRequest {
            name: MODEL.into(),
            version: String::new(),
        })
        .await
        .unwrap();
    let header = |name: &str| {
        metadata
            .metadata()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Provenance {
        infer_digest,
        infer_index,
        metadata_digest: header("model-digest"),
        metadata_index: header("ledger-index"),
    }
}

/// Asks until both RPCs name `index` (at least once, then for at most
/// `within`); panics with the last answer otherwise.
async fn expect_index(
    mut running: impl FnMut() -> bool,
    client: &mut GrpcInferenceServiceClient<Channel>,
    index: Option<u64>,
    within: Duration,
) {
    let expected = Provenance::expected(index);
    let started = Instant::now();
    loop {
        let seen = provenance(client).await;
        if seen == expected {
            return;
        }
        assert!(
            started.elapsed() < within,
            "expected ledger index {index:?} within {within:?}:\nexpected {expected:?}\nserved   {seen:?}"
        );
        assert!(running(), "the server stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_the_pod_annotation_without_a_restart() {
    let mut podinfo = PodInfo::new(OTHER_ANNOTATIONS);
    let file = podinfo.file();
    let server = InProcess::start(|c| c.pod_annotations = Some(file)).await;
    let mut client = server.ready_client().await;
    let running = || server.is_running();
    expect_index(running, &mut client, None, Duration::ZERO).await;

    // The operator recorded weights.verified and annotated the pod.
    podinfo.write(&annotated("42"));
    expect_index(running, &mut client, Some(42), PICKED_UP_WITHIN).await;

    // A value that is no index is ignored (and logged), never a crash.
    podinfo.write(&annotated("forty-two"));
    expect_index(running, &mut client, None, PICKED_UP_WITHIN).await;
    podinfo.write("not an annotations file");
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_index(running, &mut client, None, Duration::ZERO).await;

    podinfo.write(&annotated("43"));
    expect_index(running, &mut client, Some(43), PICKED_UP_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_annotation_wins_over_the_static_index_from_the_environment() {
    let mut podinfo = PodInfo::new(&annotated("42"));
    let file = podinfo.file();
    let mut server = Binary::start_with_env(
        &[],
        &[
            ("OPENMODEL_LEDGER_INDEX", "7"),
            ("OPENMODEL_POD_ANNOTATIONS", file.to_str().unwrap()),
        ],
    );
    let mut client = server.ready_client().await;
    // Read before the port opened: the first answers carry it already.
    expect_index(
        || server.is_running(),
        &mut client,
        Some(42),
        Duration::ZERO,
    )
    .await;

    // Without the annotation, the static index applies again.
    podinfo.write(OTHER_ANNOTATIONS);
    expect_index(
        || server.is_running(),
        &mut client,
        Some(7),
        PICKED_UP_WITHIN,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_index_without_a_file() {
    let server = InProcess::start(|c| c.ledger_index = Some(7)).await;
    let mut client = server.ready_client().await;
    expect_index(|| server.is_running(), &mut client, Some(7), Duration::ZERO).await;
}

#[test]
fn a_bad_static_index_is_refused_at_start() {
    for (args, env) in [
        (vec!["--ledger-index=-1"], None),
        (vec!["--ledger-index", "seven"], None),
        (vec!["--ledger-index", "9223372036854775808"], None),
        (vec![], Some("7.0")),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_openmodel-server"));
        command
            .arg("serve")
            .args(&args)
            .arg("--model-dir")
            .arg(model_dir());
        if let Some(value) = env {
            command.env("OPENMODEL_LEDGER_INDEX", value);
        }
        let out = command.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(
            err.contains("--ledger-index")
                && err.contains("not a whole number from 0 to 9223372036854775807"),
            "{args:?} {env:?}: {err}"
        );
    }
}

#[test]
fn help_explains_both_sources_of_the_index() {
    let out = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // clap wraps the help to the terminal's width.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "--ledger-index <INDEX>",
        "OPENMODEL_LEDGER_INDEX",
        "weights.verified",
        "openmodel audit show",
        "ledger_index",
        "ledger-index",
        "--pod-annotations <FILE>",
        "OPENMODEL_POD_ANNOTATIONS",
        "serving.openmodel.dev/weights-entry",
        "downward-API",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle:?}:\n{help}"
        );
    }
}
