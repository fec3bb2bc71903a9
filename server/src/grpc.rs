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
//! change; among them a request of more than `--max-client-batch-size`
//! texts (known from the shape, before the elements are looked at) or a
//! text of more than `--max-text-bytes` (before it is copied). Before the
//! model is loaded, and once shutdown began, requests answer UNAVAILABLE;
//! over `--max-concurrent-requests` or `--max-queued-texts`,
//! RESOURCE_EXHAUSTED.
//!
//! This module only maps the wire format to and from the protocol-neutral
//! core ([`crate::inference`]) and [`Error`]s to status codes
//! ([`status`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use openmodel_contract::response::{
    DIGEST_HEADER, DIGEST_PARAMETER, LEDGER_INDEX_HEADER, LEDGER_INDEX_PARAMETER,
};
use openmodel_proto::inference::ModelStreamInferResponse;
use openmodel_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::model_infer_request::InferInputTensor;
use openmodel_proto::inference::model_infer_response::InferOutputTensor;
use openmodel_proto::inference::model_metadata_response::TensorMetadata;
use openmodel_proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::generate::engine::Event;
use crate::generate::params::SamplingParams;
use crate::inference::{EmbedOptions, Embeddings, Inference, Prompt, ServedTask, Stream};
use crate::limits::RequestLimits;

pub mod generation;

/// Responses of one ModelStreamInfer call waiting to be sent; beyond it
/// the requests' tasks wait for the client to read.
const STREAM_BUFFER: usize = 64;

/// Name of the input tensor.
pub const INPUT: &str = "text";
/// Name of the output tensor.
pub const OUTPUT: &str = "embedding";

/// The gRPC service over the inference core.
#[derive(Clone)]
pub struct InferenceService {
    core: Arc<Inference>,
}

impl InferenceService {
    /// Serves `core` over gRPC.
    pub fn new(core: Arc<Inference>) -> InferenceService {
        InferenceService { core }
    }
}

/// The gRPC status of a core error.
pub fn status(e: Error) -> Status {
    match e {
        Error::BadInput(m) => Status::invalid_argument(m),
        Error::ModelNotFound(m) => Status::not_found(m),
        e @ (Error::Overloaded { .. } | Error::QueueFull { .. }) => {
            Status::resource_exhausted(e.to_string())
        }
        Error::Unavailable(m) => Status::unavailable(m),
        other => Status::internal(other.to_string()),
    }
}

/// How `raw_input_contents` BYTES must be laid out, for error messages.
const RAW_LAYOUT: &str =
    "each element must be a 4-byte little-endian length followed by that many bytes";

/// Splits `raw_input_contents` BYTES into elements (4-byte LE length +
/// bytes), `expected` of them as the shape says. Every length prefix is
/// checked, but no more than `expected` elements are kept, so a request
/// whose shape understates its elements costs no memory for them.
pub fn split_raw_bytes(raw: &[u8], expected: usize) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::with_capacity(expected.min(raw.len() / 4));
    let mut sent = 0;
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(format!(
                "raw BYTES input ends inside the 4-byte length prefix of element {sent}; {RAW_LAYOUT}"
            ));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < len {
            return Err(format!(
                "raw BYTES element {sent} claims {len} bytes but only {} remain; {RAW_LAYOUT}",
                rest.len() - 4
            ));
        }
        if sent < expected {
            out.push(&rest[4..4 + len]);
        }
        sent += 1;
        rest = &rest[4 + len..];
    }
    if sent != expected {
        return Err(count_mismatch(expected, sent));
    }
    Ok(out)
}

/// The message for a shape that does not count the texts sent.
fn count_mismatch(expected: usize, sent: usize) -> String {
    format!("shape says {expected} texts but {sent} were sent; make the shape [number of texts]")
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
        let ready = self.core.readiness().is_ok();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        self.core.check_model(&r.name, &r.version).map_err(status)?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.core.is_loaded(),
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
        self.core.check_model(&r.name, &r.version).map_err(status)?;
        let (inputs, outputs) = match self.core.task().map_err(status)? {
            ServedTask::Embedding => {
                let dim = self.core.dimension().map_err(status)? as i64;
                (
                    vec![TensorMetadata {
                        name: INPUT.into(),
                        datatype: "BYTES".into(),
                        shape: vec![-1],
                    }],
                    vec![TensorMetadata {
                        name: OUTPUT.into(),
                        datatype: "FP32".into(),
                        shape: vec![-1, dim],
                    }],
                )
            }
            ServedTask::Generation => {
                let one = |(name, datatype): &(&str, &str)| TensorMetadata {
                    name: (*name).into(),
                    datatype: (*datatype).into(),
                    shape: vec![1],
                };
                (
                    generation::INPUTS.iter().map(one).collect(),
                    generation::OUTPUTS.iter().map(one).collect(),
                )
            }
        };
        let mut resp = Response::new(ModelMetadataResponse {
            name: self.core.model_name().to_owned(),
            versions: vec!["1".into()],
            platform: "openmodel".into(),
            inputs,
            outputs,
        });
        if let Ok(v) = self.core.digest().parse() {
            resp.metadata_mut().insert(DIGEST_HEADER, v);
        }
        if let Some(index) = self.core.ledger_index() {
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
        self.core.metrics().request(&outcome, started.elapsed());
        result.map(Response::new)
    }

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<BoxStream<ModelStreamInferResponse>>, Status> {
        let mut requests = req.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        tokio::spawn(async move {
            // Each request runs on its own task; the stream ends once the
            // client has sent its last request and every answer is out.
            loop {
                let next = tokio::select! {
                    next = requests.message() => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(Some(r)) => {
                        let (service, tx) = (service.clone(), tx.clone());
                        tokio::spawn(async move { service.stream_one(r, tx).await });
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
    /// ModelInfer: admit, check the model, decode, embed (or generate),
    /// encode.
    async fn infer(&self, r: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let permit = self.core.admit().map_err(status)?;
        self.core
            .check_model(&r.model_name, &r.model_version)
            .map_err(status)?;
        self.core.check_loaded().map_err(status)?;
        if self.core.task().map_err(status)? == ServedTask::Generation {
            let (call, stream) = self.start_generation(permit, &r).await?;
            if call.stream {
                return Err(Status::invalid_argument(
                    "stream is true: streamed generation needs ModelStreamInfer (tritonclient's start_stream and async_stream_infer); send stream false for one answer",
                ));
            }
            return self.whole(&r, &call, stream).await;
        }
        let _permit = permit;
        let texts = decode_texts(&r, self.core.request_limits())?;
        let options = EmbedOptions {
            truncate: bool_param(&r.parameters, "truncate")?.unwrap_or(false),
            normalize: bool_param(&r.parameters, "normalize")?,
        };
        let count = texts.len();
        let embeddings = self.core.embed(texts, options).await.map_err(status)?;
        Ok(self.encode(r.id, count, embeddings))
    }

    /// One request of a ModelStreamInfer call: its answers (or its error,
    /// in `error_message`, the stream staying open) go to `tx`.
    async fn stream_one(
        &self,
        r: ModelInferRequest,
        tx: mpsc::Sender<Result<ModelStreamInferResponse, Status>>,
    ) {
        let started = Instant::now();
        let outcome = self.stream_answers(&r, &tx).await;
        let label = match &outcome {
            Ok(()) => "success".to_owned(),
            Err(s) => status_label(s.code()),
        };
        self.core.metrics().request(&label, started.elapsed());
        if let Err(s) = outcome {
            let _ = tx
                .send(Ok(ModelStreamInferResponse {
                    error_message: s.message().to_owned(),
                    infer_response: None,
                }))
                .await;
        }
    }

    async fn stream_answers(
        &self,
        r: &ModelInferRequest,
        tx: &mpsc::Sender<Result<ModelStreamInferResponse, Status>>,
    ) -> Result<(), Status> {
        let permit = self.core.admit().map_err(status)?;
        self.core
            .check_model(&r.model_name, &r.model_version)
            .map_err(status)?;
        self.core.check_loaded().map_err(status)?;
        let send = |response: ModelInferResponse| async move {
            tx.send(Ok(ModelStreamInferResponse {
                error_message: String::new(),
                infer_response: Some(response),
            }))
            .await
            .is_ok()
        };
        if self.core.task().map_err(status)? == ServedTask::Embedding {
            drop(permit);
            let response = self.infer(r.clone()).await?;
            send(response).await;
            return Ok(());
        }
        let (mut call, mut stream) = self.start_generation(permit, r).await?;
        if !call.stream {
            // One answer, flagged final as every stream's last.
            let mut response = self.whole(r, &call, stream).await?;
            response.parameters.insert(
                generation::FINAL_RESPONSE.into(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::BoolParam(true)),
                },
            );
            send(response).await;
            return Ok(());
        }
        let mut pending = if call.exclude_input == Some(false) {
            stream.prompt_text.clone()
        } else {
            String::new()
        };
        let mut sent_tokens = 0;
        let first_input_tokens = stream.prompt_tokens;
        loop {
            let Some(event) = stream.events.recv().await else {
                return Err(Status::internal("the generation engine stopped"));
            };
            let (finish, tokens) = match event {
                Event::Text { text, generated } => {
                    pending.push_str(&text);
                    // Text and the end often come from one step: one answer.
                    match stream.events.try_recv() {
                        Ok(Event::Finished { reason, usage }) => {
                            (Some(reason), usage.completion_tokens)
                        }
                        Ok(Event::Text { text, generated }) => {
                            pending.push_str(&text);
                            (None, generated)
                        }
                        Ok(Event::Failed(m)) => return Err(Status::internal(m)),
                        Err(_) => (None, generated),
                    }
                }
                Event::Finished { reason, usage } => (Some(reason), usage.completion_tokens),
                Event::Failed(m) => return Err(Status::internal(m)),
            };
            let piece = generation::Piece {
                text: std::mem::take(&mut pending),
                finish,
                input_tokens: first_input_tokens,
                output_tokens: tokens - sent_tokens,
            };
            sent_tokens = tokens;
            let response = generation::response(&call, &piece, self.base(r), self.parameters());
            if !send(response).await {
                // The client left: dropping the stream cancels the sequence.
                return Ok(());
            }
            if finish.is_some() {
                return Ok(());
            }
            call.exclude_input = Some(true);
        }
    }

    /// Decodes a generation request and starts it.
    async fn start_generation(
        &self,
        permit: crate::inference::Permit,
        r: &ModelInferRequest,
    ) -> Result<(generation::GenerateCall, Stream), Status> {
        let generator = self.core.generator().map_err(status)?;
        let call = generation::decode(r, self.core.request_limits().max_text_bytes)?;
        let params = match &call.sampling_parameters {
            Some(json) => SamplingParams::from_json(json, &generator.bounds).map_err(status)?,
            None => SamplingParams::default(),
        };
        let stream = self
            .core
            .generate(permit, Prompt::Text(call.prompt.clone()), params, None)
            .await
            .map_err(status)?;
        Ok((call, stream))
    }

    /// Waits for the whole output: one response, the prompt in front
    /// unless `exclude_input_in_output`.
    async fn whole(
        &self,
        r: &ModelInferRequest,
        call: &generation::GenerateCall,
        mut stream: Stream,
    ) -> Result<ModelInferResponse, Status> {
        let mut text = if call.exclude_input == Some(true) {
            String::new()
        } else {
            stream.prompt_text.clone()
        };
        loop {
            match stream.events.recv().await {
                Some(Event::Text { text: piece, .. }) => text.push_str(&piece),
                Some(Event::Finished { reason, usage }) => {
                    let piece = generation::Piece {
                        text,
                        finish: Some(reason),
                        input_tokens: usage.prompt_tokens,
                        output_tokens: usage.completion_tokens,
                    };
                    let whole = generation::GenerateCall {
                        stream: false,
                        ..call.clone()
                    };
                    return Ok(generation::response(
                        &whole,
                        &piece,
                        self.base(r),
                        self.parameters(),
                    ));
                }
                Some(Event::Failed(m)) => return Err(Status::internal(m)),
                None => return Err(Status::internal("the generation engine stopped")),
            }
        }
    }

    /// A response to `r` without outputs.
    fn base(&self, r: &ModelInferRequest) -> ModelInferResponse {
        ModelInferResponse {
            model_name: self.core.model_name().to_owned(),
            model_version: "1".into(),
            id: r.id.clone(),
            ..Default::default()
        }
    }

    /// The parameters every response carries: the manifest digest, and the
    /// ledger index once known.
    fn parameters(&self) -> HashMap<String, InferParameter> {
        let mut parameters = HashMap::from([(
            DIGEST_PARAMETER.to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(self.core.digest().to_owned())),
            },
        )]);
        // Every stored index fits an int64 (provenance::MAX_INDEX).
        if let Some(index) = self.core.ledger_index().and_then(|i| i64::try_from(i).ok()) {
            parameters.insert(
                LEDGER_INDEX_PARAMETER.to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(index)),
                },
            );
        }
        parameters
    }

    /// The response: the embeddings as little-endian f32 in
    /// `raw_output_contents[0]`, and the provenance parameters.
    fn encode(&self, id: String, count: usize, embeddings: Embeddings) -> ModelInferResponse {
        let raw = embeddings
            .values
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let parameters = self.parameters();
        ModelInferResponse {
            model_name: self.core.model_name().to_owned(),
            model_version: "1".into(),
            id,
            parameters,
            outputs: vec![InferOutputTensor {
                name: OUTPUT.into(),
                datatype: "FP32".into(),
                shape: vec![count as i64, embeddings.dimension as i64],
                parameters: HashMap::new(),
                contents: None,
            }],
            raw_output_contents: vec![raw],
        }
    }
}

/// The texts of a ModelInfer request: exactly one BYTES input named
/// [`INPUT`] of shape `[N]` or `[N, 1]`, N within `limits`, its N UTF-8
/// texts, each within `limits`, in `raw_input_contents[0]` or
/// `contents.bytes_contents`; only [`OUTPUT`] may be asked for.
fn decode_texts(r: &ModelInferRequest, limits: &RequestLimits) -> Result<Vec<String>, Status> {
    if r.inputs.len() != 1 {
        return Err(Status::invalid_argument(format!(
            "expected one input tensor {INPUT:?}, got {}",
            r.inputs.len()
        )));
    }
    let input = &r.inputs[0];
    let count = check_input(input)?;
    limits.check_count(count).map_err(status)?;
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
        (Some(raw), _) => split_raw_bytes(raw, count).map_err(Status::invalid_argument)?,
        (None, Some(c)) if c.bytes_contents.len() != count => {
            return Err(Status::invalid_argument(count_mismatch(
                count,
                c.bytes_contents.len(),
            )));
        }
        (None, Some(c)) => c.bytes_contents.iter().map(Vec::as_slice).collect(),
        (None, None) => {
            return Err(Status::invalid_argument(
                "the input has no data; send the texts in raw_input_contents or contents.bytes_contents",
            ));
        }
    };
    for o in &r.outputs {
        if o.name != OUTPUT {
            return Err(Status::invalid_argument(format!(
                "unknown output {:?}; the only output is {OUTPUT:?}",
                o.name
            )));
        }
    }
    for (i, text) in elements.iter().enumerate() {
        limits.check_text(i, text.len()).map_err(status)?;
    }
    elements
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            String::from_utf8(bytes.to_vec()).map_err(|e| {
                Status::invalid_argument(format!(
                    "text[{i}] is not valid UTF-8 (bad byte at offset {}); send the texts UTF-8 encoded",
                    e.utf8_error().valid_up_to()
                ))
            })
        })
        .collect()
}

/// Checks the input tensor's name, datatype and shape; returns N.
fn check_input(input: &InferInputTensor) -> Result<usize, Status> {
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
    match input.shape.as_slice() {
        [n] | [n, 1] if *n >= 0 => Ok(*n as usize),
        _ => Err(Status::invalid_argument(format!(
            "input shape must be [N] (or [N, 1]), N ≥ 0 the number of texts; got {:?}",
            input.shape
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_during_shutdown_answer_unavailable() {
        let core = Arc::new(Inference::new(
            "minilm".into(),
            "sha256:00".into(),
            Arc::new(crate::provenance::LedgerIndex::new(None)),
            crate::inference::Bounds {
                max_concurrent: 4,
                request: RequestLimits::default(),
                tokenization_workers: 1,
            },
            crate::metrics::Metrics::new(),
        ));
        let service = InferenceService::new(Arc::clone(&core));
        let request = || {
            Request::new(ModelInferRequest {
                model_name: "minilm".into(),
                ..Default::default()
            })
        };
        let loading = service.model_infer(request()).await.unwrap_err();
        assert_eq!(loading.code(), tonic::Code::Unavailable, "{loading:?}");
        core.begin_shutdown();
        let stopping = service.model_infer(request()).await.unwrap_err();
        assert_eq!(stopping.code(), tonic::Code::Unavailable, "{stopping:?}");
        assert!(stopping.message().contains("shutting down"), "{stopping:?}");
        let ready = service.server_ready(Request::new(ServerReadyRequest {}));
        assert!(!ready.await.unwrap().into_inner().ready);
        assert!(
            core.metrics()
                .render()
                .contains("openmodel_requests_total{outcome=\"unavailable\"} 2")
        );
    }

    #[test]
    fn raw_bytes_split_and_errors() {
        let mut raw = Vec::new();
        for s in ["hi", "", "ünï"] {
            raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        let parts = split_raw_bytes(&raw, 3).unwrap();
        assert_eq!(parts, vec![b"hi".as_slice(), b"", "ünï".as_bytes()]);
        assert!(
            split_raw_bytes(&raw[..raw.len() - 1], 3)
                .unwrap_err()
                .contains("claims")
        );
        assert!(
            split_raw_bytes(&[1, 0], 1)
                .unwrap_err()
                .contains("length prefix")
        );
        assert!(split_raw_bytes(&[], 0).unwrap().is_empty());
        for (expected, says) in [
            (1, "shape says 1 texts but 3"),
            (4, "shape says 4 texts but 3"),
        ] {
            let err = split_raw_bytes(&raw, expected).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
