//! The server under test, started in-process ([`InProcess`]: a
//! [`openmodel_server::Server`] on free ports of this test's runtime) or as
//! the real `openmodel-server serve` binary ([`Binary`], for what only the
//! binary does: flags, environment, exit codes, signals), and what the tests
//! send it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openmodel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::model_infer_request::InferInputTensor;
use openmodel_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ServerReadyRequest,
};
use openmodel_server::batching::Limits;
use openmodel_server::limits::RequestLimits;
use openmodel_server::model::engine::Engine;
use openmodel_server::server::{GenerationConfig, TaskChoice};
use openmodel_server::{Addresses, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::model_dir;

/// The name the test servers serve the model under.
pub const MODEL: &str = "minilm";

/// How long a server may take to load and warm up the model.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// The manifest digest of the test model (the current version, what a
/// server without an expectation serves).
pub fn digest() -> String {
    openmodel_server::manifest::Manifest::of_folder(&model_dir())
        .unwrap()
        .digest
}

/// The manifest digest of the test model in `version`.
pub fn digest_in(version: openmodel_server::manifest::Version) -> String {
    openmodel_server::manifest::Manifest::of_folder(&model_dir())
        .unwrap()
        .in_version(version)
        .unwrap()
        .digest
}

/// Two distinct free ports on 127.0.0.1 (both held while choosing, so they
/// differ).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// The configuration of an in-process test server: the test model as
/// [`MODEL`] on free loopback ports, the binary's defaults otherwise.
pub fn config() -> Config {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Config {
        model_dir: model_dir(),
        expect_digest: None,
        model_name: Some(MODEL.into()),
        grpc_listen: any,
        http_listen: any,
        metrics_listen: any,
        task: TaskChoice::Auto,
        max_http_body_bytes: 4 << 20,
        generation: GenerationConfig::default(),
        limits: Limits {
            max_batch_tokens: 16384,
            max_batch_requests: 64,
            max_queued: 8192,
        },
        request_limits: RequestLimits::default(),
        max_concurrent_requests: 512,
        tokenization_workers: 2,
        threads: 2,
        engine: Engine::Native,
        ledger_index: None,
        pod_annotations: None,
    }
}

/// An [`openmodel_server::Server`] running on this test's runtime; stopped
/// when dropped.
pub struct InProcess {
    /// Where it listens.
    pub addresses: Addresses,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<openmodel_server::Result<()>>>,
}

impl InProcess {
    /// Starts a server with [`config`] changed by `configure`; returns once
    /// its ports are bound (see [`InProcess::ready_client`]).
    pub async fn start(configure: impl FnOnce(&mut Config)) -> InProcess {
        let mut config = config();
        configure(&mut config);
        // The digest takes a moment: off the async workers.
        let mut server = tokio::task::spawn_blocking(move || openmodel_server::Server::new(config))
            .await
            .unwrap()
            .unwrap();
        let addresses = server.bind().await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        InProcess {
            addresses,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`, the gRPC endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addresses.grpc)
    }

    /// A new connection, once ServerReady is true; panics if the server
    /// stops or is not ready within two minutes.
    pub async fn ready_client(&self) -> GrpcInferenceServiceClient<Channel> {
        let started = Instant::now();
        loop {
            assert!(
                !self.task.as_ref().unwrap().is_finished(),
                "the server stopped before it was ready"
            );
            if let Some(client) = ready(&self.url()).await {
                return client;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "the server was not ready within {READY_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `run` is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Begins the shutdown, as SIGTERM does the binary's; [`InProcess::stopped`] waits for its end.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until `run` returned, and returns what it returned.
    pub async fn stopped(&mut self) -> openmodel_server::Result<()> {
        self.task.take().unwrap().await.unwrap()
    }

    /// GET /metrics.
    pub async fn scrape(&self) -> String {
        http_get(self.addresses.metrics, "/metrics").await
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// A client of `url` if the server there says it is ready.
async fn ready(url: &str) -> Option<GrpcInferenceServiceClient<Channel>> {
    let mut client = GrpcInferenceServiceClient::connect(url.to_owned())
        .await
        .ok()?;
    let ready = client.server_ready(ServerReadyRequest {}).await.ok()?;
    ready.into_inner().ready.then_some(client)
}

/// The grpc.health.v1 status of the whole server (`""`) at `url`, or why
/// there is none.
pub async fn health(url: &str) -> Result<i32, String> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?;
    Ok(resp.into_inner().status)
}

/// The body of `GET path` on `addr` (HTTP/1.1, connection closed after).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of one unlabelled metric, e.g. `openmodel_dropped_inputs_total`, in a scrape.
pub fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

/// A running `openmodel-server serve` binary, killed when dropped.
pub struct Binary {
    /// The process.
    pub child: Child,
    /// Its gRPC port.
    pub port: u16,
    /// Its Prometheus port.
    pub metrics_port: u16,
    /// Its OpenAI-compatible HTTP port.
    pub http_port: u16,
}

impl Binary {
    /// Starts `serve --model-name minilm` on free ports with extra flags;
    /// returns at once (see [`Binary::ready_client`]).
    pub fn start(extra: &[&str]) -> Binary {
        Binary::start_with_env(extra, &[])
    }

    /// [`Binary::start`] with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::start_model(&model_dir(), MODEL, extra, env)
    }

    /// Starts `serve` of the model in `dir` as `name` on free ports, with
    /// extra flags and environment variables.
    pub fn start_model(dir: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Binary {
        let (port, metrics_port) = free_ports();
        let (http_port, _) = free_ports();
        let child = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
            .envs(env.iter().copied())
            .args(["serve", "--model-name", name])
            .args(["--grpc-listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(extra)
            .arg("--model-dir")
            .arg(dir)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Binary {
            child,
            port,
            metrics_port,
            http_port,
        }
    }

    /// `http://127.0.0.1:PORT`, the gRPC endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// A new connection, once ServerReady is true; panics if the server
    /// exits or is not ready within two minutes.
    pub async fn ready_client(&mut self) -> GrpcInferenceServiceClient<Channel> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited with {status} before it was ready");
            }
            if let Some(client) = ready(&self.url()).await {
                return client;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "the server was not ready within {READY_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET /metrics.
    pub async fn scrape(&self) -> String {
        http_get(
            SocketAddr::from(([127, 0, 0, 1], self.metrics_port)),
            "/metrics",
        )
        .await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The input tensor `text` carrying `texts` in `contents.bytes_contents`.
pub fn text_input(texts: &[&[u8]]) -> InferInputTensor {
    InferInputTensor {
        name: "text".into(),
        datatype: "BYTES".into(),
        shape: vec![texts.len() as i64],
        parameters: Default::default(),
        contents: Some(InferTensorContents {
            bytes_contents: texts.iter().map(|t| t.to_vec()).collect(),
            ..Default::default()
        }),
    }
}

/// A ModelInfer request for the test model with one input.
pub fn infer_request(input: InferInputTensor) -> ModelInferRequest {
    ModelInferRequest {
        model_name: MODEL.into(),
        inputs: vec![input],
        ..Default::default()
    }
}

/// A request parameter.
pub fn param(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}
