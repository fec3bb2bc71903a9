//! The real `openmodel-server serve` binary on free ports, and what the
//! tests send it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openmodel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::model_infer_request::InferInputTensor;
use openmodel_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ServerReadyRequest,
};
use tonic::transport::Channel;

use super::model_dir;

/// The name the test servers serve the model under.
pub const MODEL: &str = "minilm";

/// How long a server may take to load and warm up the model.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// The manifest digest of the test model.
pub fn digest() -> String {
    openmodel_server::manifest::Manifest::of_folder(&model_dir())
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

/// A running `openmodel-server serve`, killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its gRPC port.
    pub port: u16,
    /// Its Prometheus port.
    pub metrics_port: u16,
}

impl Server {
    /// Starts `serve --model-name minilm` on free ports with extra flags;
    /// returns at once (see [`Server::ready_client`]).
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let (port, metrics_port) = free_ports();
        let child = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
            .envs(env.iter().copied())
            .args(["serve", "--model-name", MODEL])
            .args(["--grpc-listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .arg("--model-dir")
            .arg(model_dir())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Server {
            child,
            port,
            metrics_port,
        }
    }

    /// `http://127.0.0.1:PORT`, the gRPC endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new connection, once ServerReady is true; panics if the server
    /// exits or is not ready within two minutes.
    pub async fn ready_client(&mut self) -> GrpcInferenceServiceClient<Channel> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited with {status} before it was ready");
            }
            if let Ok(mut client) = GrpcInferenceServiceClient::connect(self.url()).await
                && client
                    .server_ready(ServerReadyRequest {})
                    .await
                    .is_ok_and(|r| r.into_inner().ready)
            {
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
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of one unlabelled metric, e.g. `openmodel_dropped_inputs_total`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.scrape();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
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
