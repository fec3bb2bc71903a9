//! The OpenAI-compatible HTTP API, on its own port (`--http-listen`):
//! `POST /v1/completions` and `/v1/chat/completions` for generative models
//! (Server-Sent Events when `stream`, the last chunk with `usage`),
//! `POST /v1/embeddings` for embedding models, `GET /v1/models`.
//!
//! Every answer, errors included, carries the headers
//! `x-openmodel-model-digest` and, once known, `x-openmodel-ledger-index`.
//! Errors have OpenAI's shape (`{"error": {"message", "type", …}}`) and
//! status: 400 bad input, 404 unknown model, 413 body too large, 429
//! overloaded, 503 loading or shutting down. Bodies are bounded
//! (`--max-http-body-bytes`); a client that disconnects cancels its
//! sequence within one engine step.
//!
//! Like [`crate::grpc`], this module only maps the wire to the core.

pub mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures::stream::{self, Stream as FuturesStream, StreamExt};
use openmodel_contract::response::{HTTP_DIGEST_HEADER, HTTP_LEDGER_INDEX_HEADER};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::generate::engine::Event;
use crate::generate::stop::FinishReason;
use crate::inference::{EmbedOptions, Inference, Prompt, Stream};
use crate::{Error, Result};
use wire::{ChatRequest, CompletionRequest, EmbeddingRequest, ErrorBody, ErrorDetail, Usage};

/// The API's routes over `core`, bodies bounded to `max_body_bytes`.
pub fn router(core: Arc<Inference>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(core)
}

type Core = State<Arc<Inference>>;

/// `max_tokens` of a completion that does not say (OpenAI's and vLLM's
/// default); a chat completion that does not say may fill the context, up
/// to `--max-new-tokens`.
const COMPLETIONS_MAX_TOKENS: u32 = 16;

/// An error as OpenAI sends it.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::BadInput(_) => StatusCode::BAD_REQUEST,
            Error::ModelNotFound(_) => StatusCode::NOT_FOUND,
            Error::Overloaded { .. } | Error::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match e {
            Error::BadInput(m) | Error::ModelNotFound(m) | Error::Unavailable(m) => m,
            other => other.to_string(),
        };
        ApiError { status, message }
    }
}

impl ApiError {
    fn body(&self) -> ErrorBody {
        let kind = match self.status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            _ => "internal_error",
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: kind.into(),
                param: None,
                code: Some(self.status.as_u16()),
            },
        }
    }
}

/// A JSON answer with the provenance headers.
fn answer(core: &Inference, status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    provenance(core, response.headers_mut());
    response
}

fn failure(core: &Inference, e: ApiError) -> Response {
    let body = serde_json::to_value(e.body()).unwrap_or(Value::Null);
    answer(core, e.status, body)
}

fn provenance(core: &Inference, headers: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(core.digest()) {
        headers.insert(HTTP_DIGEST_HEADER, v);
    }
    if let Some(index) = core.ledger_index() {
        headers.insert(HTTP_LEDGER_INDEX_HEADER, HeaderValue::from(index));
    }
}

async fn not_found(State(core): Core) -> Response {
    failure(
        &core,
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: "no such route; this server answers GET /v1/models, POST /v1/completions, /v1/chat/completions and /v1/embeddings".into(),
        },
    )
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Error::BadInput(format!("the request body is not a valid request: {e}")))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh id: `prefix-` and 24 hex digits.
fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:024x}",
        getrandom::u64().unwrap_or(0) as u128 * 0x1_0000 + u128::from(now() as u16)
    )
}

async fn models(State(core): Core) -> Response {
    let body = json!({
        "object": "list",
        "data": [{
            "id": core.model_name(),
            "object": "model",
            "created": 0,
            "owned_by": "openmodel",
            "root": core.digest(),
        }],
    });
    answer(&core, StatusCode::OK, body)
}

async fn embeddings(State(core): Core, body: Bytes) -> Response {
    match embed(&core, &body).await {
        Ok(v) => answer(&core, StatusCode::OK, v),
        Err(e) => failure(&core, e),
    }
}

async fn embed(core: &Inference, body: &[u8]) -> std::result::Result<Value, ApiError> {
    let _permit = core.admit()?;
    let r: EmbeddingRequest = parse(body)?;
    core.check_model(&r.model, "")?;
    core.check_loaded()?;
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(Error::BadInput(format!(
                "encoding_format {other:?}; use \"float\" or \"base64\""
            ))
            .into());
        }
    };
    let texts = r.input.into_vec();
    let count = texts.len();
    let result = core.embed(texts, EmbedOptions::default()).await?;
    let data: Vec<Value> = result
        .values
        .chunks(result.dimension.max(1))
        .take(count)
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": core.model_name(),
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }))
}

/// What kind of generation endpoint answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(State(core): Core, body: Bytes) -> Response {
    generate(core, Kind::Completion, body).await
}

async fn chat(State(core): Core, body: Bytes) -> Response {
    generate(core, Kind::Chat, body).await
}

/// A started generation and how to answer it.
struct Started {
    stream: Stream,
    streaming: bool,
    include_usage: bool,
    echo: bool,
}

async fn start(
    core: &Inference,
    kind: Kind,
    body: &[u8],
) -> std::result::Result<Started, ApiError> {
    let permit = core.admit()?;
    let (model, prompt, mut sampling, streaming, options, echo) = match kind {
        Kind::Completion => {
            let r: CompletionRequest = parse(body)?;
            let mut prompts = r.prompt.into_vec();
            if prompts.len() != 1 {
                return Err(Error::BadInput(format!(
                    "prompt holds {} strings; send one prompt per request",
                    prompts.len()
                ))
                .into());
            }
            let prompt = Prompt::Text(prompts.remove(0));
            let mut sampling = r.sampling;
            sampling.max_tokens = sampling.max_tokens.or(Some(COMPLETIONS_MAX_TOKENS));
            (
                r.model,
                prompt,
                sampling,
                r.stream,
                r.stream_options,
                r.echo,
            )
        }
        Kind::Chat => {
            let r: ChatRequest = parse(body)?;
            if r.top_logprobs.is_some() {
                return Err(
                    Error::BadInput("top_logprobs are not served; leave them out".into()).into(),
                );
            }
            if r.messages.is_empty() {
                return Err(
                    Error::BadInput("messages is empty; send at least one message".into()).into(),
                );
            }
            let messages = r
                .messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| m.into_message(i))
                .collect::<Result<Vec<_>>>()?;
            let mut sampling = r.sampling;
            if sampling.max_tokens.is_none() {
                sampling.max_tokens = r.max_completion_tokens;
            }
            (
                r.model,
                Prompt::Chat(messages),
                sampling,
                r.stream,
                r.stream_options,
                false,
            )
        }
    };
    core.check_model(&model, "")?;
    core.check_loaded()?;
    let cache_salt = sampling.take_cache_salt()?;
    let params = sampling.params()?;
    let stream = core.generate(permit, prompt, params, cache_salt).await?;
    Ok(Started {
        stream,
        streaming,
        include_usage: options.is_some_and(|o| o.include_usage),
        echo,
    })
}

async fn generate(core: Arc<Inference>, kind: Kind, body: Bytes) -> Response {
    let started = match start(&core, kind, &body).await {
        Ok(s) => s,
        Err(e) => return failure(&core, e),
    };
    let id = new_id(if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    });
    if started.streaming {
        let mut response = Sse::new(chunks(Arc::clone(&core), kind, id, started))
            .keep_alive(KeepAlive::default())
            .into_response();
        provenance(&core, response.headers_mut());
        return response;
    }
    let mut stream = started.stream;
    let mut text = if started.echo {
        stream.prompt_text.clone()
    } else {
        String::new()
    };
    loop {
        match stream.events.recv().await {
            Some(Event::Text { text: piece, .. }) => text.push_str(&piece),
            Some(Event::Finished { reason, usage }) => {
                let body = whole(&core, kind, &id, &text, reason, usage.into());
                return answer(&core, StatusCode::OK, body);
            }
            Some(Event::Failed(m)) => {
                return failure(&core, Error::Thread(m).into());
            }
            None => {
                return failure(
                    &core,
                    Error::Thread("the generation engine stopped".into()).into(),
                );
            }
        }
    }
}

fn whole(
    core: &Inference,
    kind: Kind,
    id: &str,
    text: &str,
    reason: FinishReason,
    usage: Usage,
) -> Value {
    let choice = match kind {
        Kind::Completion => {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason.as_str()})
        }
        Kind::Chat => {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": reason.as_str()})
        }
    };
    json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": now(),
        "model": core.model_name(),
        "choices": [choice],
        "usage": usage,
    })
}

/// One streamed chunk: `delta` text, and the finish reason and usage on
/// the last.
fn chunk(
    core: &Inference,
    kind: Kind,
    id: &str,
    delta: Option<&str>,
    finish: Option<(FinishReason, Usage)>,
) -> Value {
    let reason = finish.map(|(r, _)| r.as_str());
    let choices = match (kind, delta) {
        (_, None) => json!([]),
        (Kind::Completion, Some(text)) => {
            json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": reason}])
        }
        (Kind::Chat, Some(text)) => {
            json!([{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": reason}])
        }
    };
    let mut body = json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
        "created": now(),
        "model": core.model_name(),
        "choices": choices,
    });
    if let Some((_, usage)) = finish {
        body["usage"] = json!(usage);
    }
    body
}

/// The Server-Sent Events of a streamed generation, ending with
/// `data: [DONE]`. Dropped when the client disconnects, which drops the
/// engine's stream and so cancels the sequence.
fn chunks(
    core: Arc<Inference>,
    kind: Kind,
    id: String,
    started: Started,
) -> impl FuturesStream<Item = std::result::Result<SseEvent, Infallible>> {
    let mut first: Vec<Value> = Vec::new();
    if kind == Kind::Chat {
        first.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": now(), "model": core.model_name(),
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}],
        }));
    }
    if started.echo {
        first.push(chunk(
            &core,
            kind,
            &id,
            Some(&started.stream.prompt_text),
            None,
        ));
    }
    let include_usage = started.include_usage;
    let state = (started.stream, false);
    let opening = stream::iter(
        first
            .into_iter()
            .map(|v| Ok(SseEvent::default().data(v.to_string()))),
    );
    let body = stream::unfold(state, move |(mut stream, done)| {
        let (core, id) = (Arc::clone(&core), id.clone());
        async move {
            if done {
                return None;
            }
            let events: Vec<Value> = match stream.events.recv().await {
                Some(Event::Text { text, .. }) => vec![chunk(&core, kind, &id, Some(&text), None)],
                Some(Event::Finished { reason, usage }) => {
                    let usage: Usage = usage.into();
                    let mut last = vec![chunk(&core, kind, &id, Some(""), Some((reason, usage)))];
                    if include_usage {
                        let mut only_usage = chunk(&core, kind, &id, None, None);
                        only_usage["usage"] = json!(usage);
                        last.push(only_usage);
                    }
                    return Some((last_events(last), (stream, true)));
                }
                Some(Event::Failed(m)) => {
                    let e = ApiError::from(Error::Thread(m));
                    let body = serde_json::to_value(e.body()).unwrap_or(Value::Null);
                    return Some((last_events(vec![body]), (stream, true)));
                }
                None => return None,
            };
            Some((
                stream::iter(
                    events
                        .into_iter()
                        .map(|v| Ok(SseEvent::default().data(v.to_string()))),
                )
                .boxed(),
                (stream, false),
            ))
        }
    });
    opening.chain(body.flatten())
}

/// `values` as events, then `[DONE]`.
fn last_events(
    values: Vec<Value>,
) -> futures::stream::BoxStream<'static, std::result::Result<SseEvent, Infallible>> {
    let mut events: Vec<std::result::Result<SseEvent, Infallible>> = values
        .into_iter()
        .map(|v| Ok(SseEvent::default().data(v.to_string())))
        .collect();
    events.push(Ok(SseEvent::default().data("[DONE]")));
    stream::iter(events).boxed()
}
