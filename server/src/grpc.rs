//! The Open Inference Protocol v2 service (Triton's superset) for an
//! embedding model.
//!
//! Model metadata: input `text`, BYTES, shape `[-1]`; output `embedding`,
//! FP32, shape `[-1, dim]`. ModelInfer takes the texts either as
//! `raw_input_contents` (each element a 4-byte little-endian length, then the
//! UTF-8 bytes) or as `contents.bytes_contents`, and optional request
//! parameters `truncate` and `normalize` (bool). The embeddings always come
//! back in `raw_output_contents` (little-endian f32), as tritonclient reads
//! them. Every response carries the served weights' manifest digest: the
//! parameter `model_digest` on ModelInfer, the gRPC header `model-digest` on
//! ModelMetadata (whose message has no parameters). Beside it, once known,
//! the audit-ledger index of their `weights.verified` entry (see
//! [`crate::provenance`]): parameter `ledger_index` (int64), header
//! `ledger-index`; both are absent while it is unknown. RPCs this server
//! does not implement answer UNIMPLEMENTED.
//!
//! As in Triton, an unknown model name, or a model version that is a whole
//! number other than `1`, is NOT_FOUND; a version that is not a whole number
//! ≥ 0 is INVALID_ARGUMENT; an empty version means the latest (`1`). Every
//! other bad request is INVALID_ARGUMENT, with a message saying what to
//! change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use openmodel_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::model_infer_response::InferOutputTensor;
use openmodel_proto::inference::model_metadata_response::TensorMetadata;
use openmodel_proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse,
};
use tokio::sync::{Semaphore, oneshot};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::batching::{Batcher, Job};
use crate::metrics::Metrics;
use crate::model::embedder::Embedder;
use crate::provenance::LedgerIndex;

/// Name of the input tensor.
pub const INPUT: &str = "text";
/// Name of the output tensor.
pub const OUTPUT: &str = "embedding";
/// ModelInfer response parameter: the manifest digest of the served weights.
pub const DIGEST_PARAMETER: &str = "model_digest";
/// ModelMetadata response header: the manifest digest of the served weights.
pub const DIGEST_HEADER: &str = "model-digest";
/// ModelInfer response parameter (int64): the ledger index of the
/// `weights.verified` entry of the served weights.
pub const LEDGER_INDEX_PARAMETER: &str = "ledger_index";
/// ModelMetadata response header: the ledger index of the
/// `weights.verified` entry of the served weights.
pub const LEDGER_INDEX_HEADER: &str = "ledger-index";

/// What the service serves once the model is loaded.
pub struct Loaded {
    /// The model.
    pub embedder: Arc<Embedder>,
    /// Its batcher.
    pub batcher: Batcher,
}

/// Shared state of the service.
pub struct State {
    /// Model name clients use.
    pub model_name: String,
    /// Manifest digest of the served folder.
    pub digest: String,
    /// Ledger index of the `weights.verified` entry of these weights.
    pub ledger_index: Arc<LedgerIndex>,
    /// Set once the model is loaded and warmed up.
    pub loaded: OnceLock<Loaded>,
    /// Limits requests in flight.
    pub permits: Arc<Semaphore>,
    /// Largest number of requests in flight.
    pub max_concurrent: usize,
    /// False once shutdown begins.
    pub accepting: AtomicBool,
    /// Request and batch metrics.
    pub metrics: Arc<Metrics>,
}

/// The gRPC service.
#[derive(Clone)]
pub struct InferenceService {
    state: Arc<State>,
}

impl InferenceService {
    /// Wraps shared state.
    pub fn new(state: Arc<State>) -> InferenceService {
        InferenceService { state }
    }

    fn check_model(&self, name: &str, version: &str) -> Result<(), Status> {
        if name != self.state.model_name {
            return Err(Status::not_found(format!(
                "unknown model {name:?}; this server serves {:?}",
                self.state.model_name
            )));
        }
        if version.is_empty() {
            return Ok(());
        }
        match version.parse::<i64>() {
            Ok(1) => Ok(()),
            Ok(v) if v >= 0 => Err(Status::not_found(format!(
                "model {name:?} has only version \"1\", not {version:?}; ask for \"1\" or leave the version empty"
            ))),
            _ => Err(Status::invalid_argument(format!(
                "model version {version:?} is not a whole number ≥ 0; ask for \"1\" or leave the version empty"
            ))),
        }
    }

    fn loaded(&self) -> Result<&Loaded, Status> {
        self.state.loaded.get().ok_or_else(|| {
            Status::unavailable("the model is still loading; retry when ServerReady is true")
        })
    }
}

/// How `raw_input_contents` BYTES must be laid out, for error messages.
const RAW_LAYOUT: &str =
    "each element must be a 4-byte little-endian length followed by that many bytes";

/// Splits `raw_input_contents` BYTES into elements (4-byte LE length + bytes).
pub fn split_raw_bytes(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(format!(
                "raw BYTES input ends inside the 4-byte length prefix of element {}; {RAW_LAYOUT}",
                out.len()
            ));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < len {
            return Err(format!(
                "raw BYTES element {} claims {len} bytes but only {} remain; {RAW_LAYOUT}",
                out.len(),
                rest.len() - 4
            ));
        }
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    Ok(out)
}

fn bool_param(
    params: &HashMap<String, InferParameter>,
    name: &str,
) -> Result<Option<bool>, Status> {
    match params.get(name).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::BoolParam(b)) => Ok(Some(*b)),
        Some(other) => Err(Status::invalid_argument(format!(
            "parameter {name:?} must be a bool (bool_param), not {other:?}"
        ))),
    }
}

fn to_status(e: Error) -> Status {
    match e {
        Error::BadInput(m) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready =
            self.state.loaded.get().is_some() && self.state.accepting.load(Ordering::Relaxed);
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        self.check_model(&r.name, &r.version)?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.state.loaded.get().is_some(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "openmodel".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["parameters".into()],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        self.check_model(&r.name, &r.version)?;
        let dim = self.loaded()?.embedder.spec().dimension() as i64;
        let mut resp = Response::new(ModelMetadataResponse {
            name: self.state.model_name.clone(),
            versions: vec!["1".into()],
            platform: "openmodel".into(),
            inputs: vec![TensorMetadata {
                name: INPUT.into(),
                datatype: "BYTES".into(),
                shape: vec![-1],
            }],
            outputs: vec![TensorMetadata {
                name: OUTPUT.into(),
                datatype: "FP32".into(),
                shape: vec![-1, dim],
            }],
        });
        if let Ok(v) = self.state.digest.parse() {
            resp.metadata_mut().insert(DIGEST_HEADER, v);
        }
        if let Some(index) = self.state.ledger_index.get() {
            resp.metadata_mut()
                .insert(LEDGER_INDEX_HEADER, index.into());
        }
        Ok(resp)
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let started = Instant::now();
        let result = self.infer(req.into_inner()).await;
        let outcome = match &result {
            Ok(_) => "success".to_owned(),
            Err(status) => status_label(status.code()),
        };
        self.state.metrics.request(&outcome, started.elapsed());
        result.map(Response::new)
    }
}

/// `InvalidArgument` → `invalid_argument`.
fn status_label(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

impl InferenceService {
    async fn infer(&self, r: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let _permit = Arc::clone(&self.state.permits).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the server is at its limit of {} concurrent requests; retry later or raise --max-concurrent-requests",
                self.state.max_concurrent
            ))
        })?;
        self.check_model(&r.model_name, &r.model_version)?;
        let loaded = self.loaded()?;
        if r.inputs.len() != 1 {
            return Err(Status::invalid_argument(format!(
                "expected one input tensor {INPUT:?}, got {}",
                r.inputs.len()
            )));
        }
        let input = &r.inputs[0];
        if input.name != INPUT {
            return Err(Status::invalid_argument(format!(
                "unknown input {:?}; the only input is {INPUT:?}",
                input.name
            )));
        }
        if input.datatype != "BYTES" {
            return Err(Status::invalid_argument(format!(
                "input {:?} must be BYTES (strings), not {}",
                input.name, input.datatype
            )));
        }
        let shape_ok = matches!(input.shape.as_slice(), [n] | [n, 1] if *n >= 0);
        if !shape_ok {
            return Err(Status::invalid_argument(format!(
                "input shape must be [N] (or [N, 1]), N ≥ 0 the number of texts; got {:?}",
                input.shape
            )));
        }
        let count = input.shape[0] as usize;
        let has_contents = input
            .contents
            .as_ref()
            .is_some_and(|c| !c.bytes_contents.is_empty());
        if r.raw_input_contents.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "raw_input_contents has {} entries for one input; send all the texts in raw_input_contents[0]",
                r.raw_input_contents.len()
            )));
        }
        if has_contents && !r.raw_input_contents.is_empty() {
            return Err(Status::invalid_argument(
                "the texts are in both raw_input_contents and contents.bytes_contents; send them in only one",
            ));
        }
        let elements: Vec<&[u8]> = match (r.raw_input_contents.first(), &input.contents) {
            (Some(raw), _) => split_raw_bytes(raw).map_err(Status::invalid_argument)?,
            (None, Some(c)) => c.bytes_contents.iter().map(Vec::as_slice).collect(),
            (None, None) => {
                return Err(Status::invalid_argument(
                    "the input has no data; send the texts in raw_input_contents or contents.bytes_contents",
                ));
            }
        };
        if elements.len() != count {
            return Err(Status::invalid_argument(format!(
                "shape says {count} texts but {} were sent; make the shape [number of texts]",
                elements.len()
            )));
        }
        for o in &r.outputs {
            if o.name != OUTPUT {
                return Err(Status::invalid_argument(format!(
                    "unknown output {:?}; the only output is {OUTPUT:?}",
                    o.name
                )));
            }
        }
        let truncate = bool_param(&r.parameters, "truncate")?.unwrap_or(false);
        let normalize =
            bool_param(&r.parameters, "normalize")?.unwrap_or(loaded.embedder.spec().normalize);

        let tokenizing = Instant::now();
        let mut tokenized = Vec::with_capacity(count);
        for (i, bytes) in elements.iter().enumerate() {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                Status::invalid_argument(format!(
                    "text[{i}] is not valid UTF-8 (bad byte at offset {}); send the texts UTF-8 encoded",
                    e.valid_up_to()
                ))
            })?;
            let tokens = loaded
                .embedder
                .tokenize(text, truncate)
                .map_err(|e| Status::invalid_argument(format!("text[{i}]: {e}")))?;
            tokenized.push(tokens.ids);
        }
        self.state.metrics.tokenized(tokenizing.elapsed());
        let mut receivers = Vec::with_capacity(count);
        for ids in tokenized {
            let (reply, rx) = oneshot::channel();
            loaded
                .batcher
                .submit(Job {
                    ids,
                    normalize,
                    reply,
                    queued: Instant::now(),
                })
                .map_err(to_status)?;
            receivers.push(rx);
        }
        let dim = loaded.embedder.spec().dimension();
        let mut raw = Vec::with_capacity(count * dim * 4);
        for rx in receivers {
            let v = rx
                .await
                .map_err(|_| Status::internal("the model thread stopped"))?
                .map_err(to_status)?;
            for x in v {
                raw.extend_from_slice(&x.to_le_bytes());
            }
        }
        let mut parameters = HashMap::from([(
            DIGEST_PARAMETER.to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(self.state.digest.clone())),
            },
        )]);
        // Every stored index fits an int64 (provenance::MAX_INDEX).
        if let Some(index) = self
            .state
            .ledger_index
            .get()
            .and_then(|i| i64::try_from(i).ok())
        {
            parameters.insert(
                LEDGER_INDEX_PARAMETER.to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(index)),
                },
            );
        }
        Ok(ModelInferResponse {
            model_name: self.state.model_name.clone(),
            model_version: "1".into(),
            id: r.id,
            parameters,
            outputs: vec![InferOutputTensor {
                name: OUTPUT.into(),
                datatype: "FP32".into(),
                shape: vec![count as i64, dim as i64],
                parameters: HashMap::new(),
                contents: None,
            }],
            raw_output_contents: vec![raw],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_split_and_errors() {
        let mut raw = Vec::new();
        for s in ["hi", "", "ünï"] {
            raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        let parts = split_raw_bytes(&raw).unwrap();
        assert_eq!(parts, vec![b"hi".as_slice(), b"", "ünï".as_bytes()]);
        assert!(
            split_raw_bytes(&raw[..raw.len() - 1])
                .unwrap_err()
                .contains("claims")
        );
        assert!(
            split_raw_bytes(&[1, 0])
                .unwrap_err()
                .contains("length prefix")
        );
        assert!(split_raw_bytes(&[]).unwrap().is_empty());
    }
}
