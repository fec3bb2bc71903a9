//! Every bad request to the server (started in-process), sent with the
//! tonic client of `openmodel-proto`, gets the gRPC status code Triton would
//! answer and a message saying what to change; every RPC the server does not
//! implement answers UNIMPLEMENTED. Also: texts sent as `raw_input_contents`
//! and as `contents.bytes_contents` give the same embeddings, the response
//! names the weights' digest, and `truncate` makes a too long text fit.

mod common;

use common::server::*;
use common::*;

use openmodel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use openmodel_proto::inference::*;
use tonic::Code;
use tonic::transport::Channel;

/// `raw_input_contents` layout of BYTES: each text a 4-byte little-endian
/// length, then its bytes.
fn raw(texts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in texts {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t);
    }
    out
}

/// A request whose input `text` has `shape` and its data in
/// `raw_input_contents[0]`.
fn raw_request(shape: &[i64], bytes: Vec<u8>) -> ModelInferRequest {
    let mut input = text_input(&[]);
    input.shape = shape.to_vec();
    input.contents = None;
    ModelInferRequest {
        raw_input_contents: vec![bytes],
        ..infer_request(input)
    }
}

/// "word" `words` times: one token each, plus [CLS] and [SEP].
fn words(words: usize) -> String {
    vec!["word"; words].join(" ")
}

/// One bad request and what the answer must be.
struct Case {
    what: &'static str,
    request: ModelInferRequest,
    code: Code,
    /// Each must occur in the message.
    says: &'static [&'static str],
}

fn case(
    what: &'static str,
    request: ModelInferRequest,
    code: Code,
    says: &'static [&'static str],
) -> Case {
    Case {
        what,
        request,
        code,
        says,
    }
}

/// `request` with one request parameter set.
fn with_param(
    mut request: ModelInferRequest,
    name: &str,
    value: ParameterChoice,
) -> ModelInferRequest {
    request.parameters.insert(name.into(), param(value));
    request
}

fn bad_requests() -> Vec<Case> {
    let hello = || infer_request(text_input(&[b"hello"]));
    let too_long = words(300);
    vec![
        case(
            "invalid UTF-8 in bytes_contents",
            infer_request(text_input(&[b"fine", b"caf\xe9"])),
            Code::InvalidArgument,
            &[
                "text[1]",
                "not valid UTF-8",
                "offset 3",
                "send the texts UTF-8 encoded",
            ],
        ),
        case(
            "invalid UTF-8 in raw_input_contents",
            raw_request(&[1], raw(&[b"\xff\xfe"])),
            Code::InvalidArgument,
            &["text[0]", "not valid UTF-8", "send the texts UTF-8 encoded"],
        ),
        case(
            "raw_input_contents ending inside a length prefix",
            raw_request(&[2], [raw(&[b"hi"]), vec![7, 0, 0]].concat()),
            Code::InvalidArgument,
            &[
                "length prefix of element 1",
                "4-byte little-endian length followed by that many bytes",
            ],
        ),
        case(
            "raw_input_contents with a length running past the end",
            raw_request(&[1], [vec![10, 0, 0, 0], b"hi".to_vec()].concat()),
            Code::InvalidArgument,
            &[
                "element 0 claims 10 bytes but only 2 remain",
                "4-byte little-endian length followed by that many bytes",
            ],
        ),
        case(
            "two raw_input_contents for one input",
            ModelInferRequest {
                raw_input_contents: vec![raw(&[b"a"]), raw(&[b"b"])],
                ..raw_request(&[1], Vec::new())
            },
            Code::InvalidArgument,
            &["2 entries", "raw_input_contents[0]"],
        ),
        case(
            "texts in both raw_input_contents and bytes_contents",
            ModelInferRequest {
                raw_input_contents: vec![raw(&[b"hello"])],
                ..hello()
            },
            Code::InvalidArgument,
            &[
                "both raw_input_contents and contents.bytes_contents",
                "only one",
            ],
        ),
        case(
            "no data at all",
            raw_request(&[1], Vec::new()).tap(|r| r.raw_input_contents.clear()),
            Code::InvalidArgument,
            &["no data", "raw_input_contents or contents.bytes_contents"],
        ),
        case(
            "shape [2, 3]",
            infer_request(text_input(&[b"a", b"b"]).tap(|i| i.shape = vec![2, 3])),
            Code::InvalidArgument,
            &["[N] (or [N, 1])", "got [2, 3]"],
        ),
        case(
            "negative shape",
            infer_request(text_input(&[b"a"]).tap(|i| i.shape = vec![-1])),
            Code::InvalidArgument,
            &["N ≥ 0 the number of texts", "got [-1]"],
        ),
        case(
            "empty shape",
            infer_request(text_input(&[b"a"]).tap(|i| i.shape = vec![])),
            Code::InvalidArgument,
            &["[N] (or [N, 1])", "got []"],
        ),
        case(
            "shape counting more texts than sent",
            infer_request(text_input(&[b"a", b"b"]).tap(|i| i.shape = vec![3])),
            Code::InvalidArgument,
            &[
                "shape says 3 texts but 2 were sent",
                "make the shape [number of texts]",
            ],
        ),
        case(
            "shape counting fewer texts than sent (raw)",
            raw_request(&[1], raw(&[b"a", b"b"])),
            Code::InvalidArgument,
            &["shape says 1 texts but 2 were sent"],
        ),
        case(
            "datatype FP32",
            infer_request(text_input(&[b"1.0"]).tap(|i| i.datatype = "FP32".into())),
            Code::InvalidArgument,
            &["must be BYTES", "not FP32"],
        ),
        case(
            "wrong input name",
            infer_request(text_input(&[b"hello"]).tap(|i| i.name = "texts".into())),
            Code::InvalidArgument,
            &["unknown input \"texts\"", "the only input is \"text\""],
        ),
        case(
            "no inputs",
            hello().tap(|r| r.inputs.clear()),
            Code::InvalidArgument,
            &["expected one input tensor \"text\", got 0"],
        ),
        case(
            "two inputs",
            hello().tap(|r| r.inputs.push(text_input(&[b"again"]))),
            Code::InvalidArgument,
            &["expected one input tensor \"text\", got 2"],
        ),
        case(
            "empty text",
            infer_request(text_input(&[b"fine", b""])),
            Code::InvalidArgument,
            &["text[1]", "empty text", "at least one character"],
        ),
        case(
            "too long text without truncate",
            infer_request(text_input(&[b"fine", too_long.as_bytes()])),
            Code::InvalidArgument,
            &["text[1]", "302 tokens", "maximum of 256", "truncate=true"],
        ),
        case(
            "one token over the limit",
            infer_request(text_input(&[words(255).as_bytes()])),
            Code::InvalidArgument,
            &["257 tokens", "maximum of 256"],
        ),
        case(
            "truncate as a string",
            with_param(
                hello(),
                "truncate",
                ParameterChoice::StringParam("true".into()),
            ),
            Code::InvalidArgument,
            &[
                "parameter \"truncate\" must be a bool",
                "StringParam(\"true\")",
            ],
        ),
        case(
            "normalize as an integer",
            with_param(hello(), "normalize", ParameterChoice::Int64Param(1)),
            Code::InvalidArgument,
            &["parameter \"normalize\" must be a bool", "Int64Param(1)"],
        ),
        case(
            "unknown model",
            hello().tap(|r| r.model_name = "nope".into()),
            Code::NotFound,
            &["unknown model \"nope\"", "this server serves \"minilm\""],
        ),
        case(
            "unknown output",
            hello().tap(|r| {
                r.outputs.push(InferRequestedOutputTensor {
                    name: "pooled".into(),
                    parameters: Default::default(),
                })
            }),
            Code::InvalidArgument,
            &[
                "unknown output \"pooled\"",
                "the only output is \"embedding\"",
            ],
        ),
        // Triton: a version that parses as a number but is not loaded is
        // NOT_FOUND; one that is not a number ≥ 0 is INVALID_ARGUMENT.
        case(
            "model version 2",
            hello().tap(|r| r.model_version = "2".into()),
            Code::NotFound,
            &["only version \"1\", not \"2\"", "leave the version empty"],
        ),
        case(
            "model version 0",
            hello().tap(|r| r.model_version = "0".into()),
            Code::NotFound,
            &["only version \"1\", not \"0\""],
        ),
        case(
            "model version \"latest\"",
            hello().tap(|r| r.model_version = "latest".into()),
            Code::InvalidArgument,
            &[
                "\"latest\" is not a whole number ≥ 0",
                "leave the version empty",
            ],
        ),
        case(
            "model version -1",
            hello().tap(|r| r.model_version = "-1".into()),
            Code::InvalidArgument,
            &["\"-1\" is not a whole number ≥ 0"],
        ),
        // A request bad in several ways names the first thing to fix.
        case(
            "several faults at once",
            infer_request(text_input(&[b"\xff"]).tap(|i| {
                i.datatype = "INT8".into();
                i.shape = vec![1, 2, 3];
            })),
            Code::InvalidArgument,
            &["must be BYTES", "not INT8"],
        ),
    ]
}

/// Mutate in place and return, to build variants of a request inline.
trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

impl Tap for ModelInferRequest {}
impl Tap for InferInputTensor {}

async fn client() -> (InProcess, GrpcInferenceServiceClient<Channel>) {
    let server = InProcess::start(|_| {}).await;
    let client = server.ready_client().await;
    (server, client)
}

#[tokio::test]
async fn every_bad_request_gets_the_right_code_and_says_what_to_change() {
    let (_server, mut client) = client().await;
    let mut wrong = Vec::new();
    let cases = bad_requests();
    for c in &cases {
        match client.model_infer(c.request.clone()).await {
            Ok(_) => wrong.push(format!("{}: succeeded, expected {:?}", c.what, c.code)),
            Err(s) => {
                let missing: Vec<_> = c
                    .says
                    .iter()
                    .filter(|f| !s.message().contains(**f))
                    .collect();
                if s.code() != c.code || !missing.is_empty() {
                    wrong.push(format!(
                        "{}: got {:?} {:?}, expected {:?} saying {missing:?}",
                        c.what,
                        s.code(),
                        s.message(),
                        c.code
                    ));
                }
            }
        }
    }
    // ModelMetadata and ModelReady check the model the same way.
    let checks = [
        (
            "another model",
            "nope",
            "",
            Code::NotFound,
            "unknown model \"nope\"",
        ),
        (
            "version 2",
            MODEL,
            "2",
            Code::NotFound,
            "only version \"1\"",
        ),
        (
            "version \"x\"",
            MODEL,
            "x",
            Code::InvalidArgument,
            "not a whole number",
        ),
    ];
    for (what, name, version, code, says) in checks {
        let (name, version) = (name.to_owned(), version.to_owned());
        let answers = [
            (
                "ModelMetadata",
                client
                    .model_metadata(ModelMetadataRequest {
                        name: name.clone(),
                        version: version.clone(),
                    })
                    .await
                    .map(drop),
            ),
            (
                "ModelReady",
                client
                    .model_ready(ModelReadyRequest { name, version })
                    .await
                    .map(drop),
            ),
        ];
        for (rpc, got) in answers {
            match got {
                Err(s) if s.code() == code && s.message().contains(says) => {}
                Err(s) => wrong.push(format!(
                    "{rpc} of {what}: got {:?} {:?}, expected {code:?} saying {says:?}",
                    s.code(),
                    s.message()
                )),
                Ok(()) => wrong.push(format!("{rpc} of {what}: succeeded, expected {code:?}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} bad requests were answered wrongly:\n{}",
        wrong.len(),
        cases.len() + 2 * checks.len(),
        wrong.join("\n")
    );
    // Still serving after all that.
    client
        .model_infer(infer_request(text_input(&[b"still here"])))
        .await
        .expect("the server stopped answering after the bad requests");
}

/// The embeddings of a response, one vector per text.
fn embeddings(resp: &ModelInferResponse) -> Vec<Vec<f32>> {
    assert_eq!(resp.outputs.len(), 1, "{resp:?}");
    let out = &resp.outputs[0];
    assert_eq!(
        (out.name.as_str(), out.datatype.as_str()),
        ("embedding", "FP32")
    );
    let dim = out.shape[1] as usize;
    let floats: Vec<f32> = resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats.len(), out.shape[0] as usize * dim);
    floats.chunks(dim).map(<[f32]>::to_vec).collect()
}

#[tokio::test]
async fn raw_and_bytes_contents_agree_and_the_digest_comes_back() {
    let (_server, mut client) = client().await;
    let fx = fixture();
    let cases: Vec<(String, Vec<f32>)> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["truncated"].as_bool().unwrap())
        .take(4)
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_owned(),
                vector(&c["embedding"]),
            )
        })
        .collect();
    let texts: Vec<&[u8]> = cases.iter().map(|(t, _)| t.as_bytes()).collect();

    let as_bytes = client
        .model_infer(infer_request(text_input(&texts)).tap(|r| r.id = "req-7".into()))
        .await
        .unwrap()
        .into_inner();
    let as_raw = client
        .model_infer(raw_request(&[texts.len() as i64], raw(&texts)))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(as_bytes.model_name, MODEL);
    assert_eq!(as_bytes.model_version, "1");
    assert_eq!(as_bytes.id, "req-7", "the request id comes back");
    assert_eq!(as_bytes.outputs[0].shape, vec![texts.len() as i64, 384]);
    for resp in [&as_bytes, &as_raw] {
        assert_eq!(
            resp.parameters
                .get("model_digest")
                .and_then(|p| p.parameter_choice.clone()),
            Some(ParameterChoice::StringParam(digest())),
            "the response must carry the manifest digest of the served weights"
        );
    }
    let (a, b) = (embeddings(&as_bytes), embeddings(&as_raw));
    assert_eq!(a.len(), cases.len());
    for ((x, y), (text, want)) in a.iter().zip(&b).zip(&cases) {
        // Batches may be formed differently for the two requests; the
        // numbers may then differ in the last bits, no more.
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(
            worst < 1e-5,
            "{text:?}: raw and bytes_contents differ by {worst}"
        );
        let cosine: f32 = x.iter().zip(want).map(|(p, q)| p * q).sum();
        assert!(
            cosine > 0.9999,
            "{text:?}: cosine {cosine} against sentence-transformers"
        );
    }
}

#[tokio::test]
async fn truncate_makes_a_too_long_text_fit_in_256_tokens() {
    let (_server, client) = client().await;
    let embed = |text: String, truncate: Option<bool>| {
        let mut client = client.clone();
        async move {
            let mut req = infer_request(text_input(&[text.as_bytes()]));
            if let Some(t) = truncate {
                req = with_param(req, "truncate", ParameterChoice::BoolParam(t));
            }
            client
                .model_infer(req)
                .await
                .map(|r| embeddings(r.get_ref()).remove(0))
        }
    };
    // [CLS] + 254 words + [SEP] is exactly the maximum.
    embed(words(254), None)
        .await
        .expect("256 tokens fit without truncate");
    let err = embed(words(300), Some(false)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let long = embed(words(300), Some(true))
        .await
        .expect("truncate=true must succeed");
    assert_eq!(long.len(), 384);
    // Cut at 256 tokens: what follows token 254 does not matter, and it is
    // the same as sending exactly the first 254 words.
    let other_tail = embed(
        format!("{} something else entirely", words(254)),
        Some(true),
    )
    .await
    .unwrap();
    let exact = embed(words(254), Some(true)).await.unwrap();
    for v in [&other_tail, &exact] {
        let worst = long
            .iter()
            .zip(v)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "truncated embeddings differ by {worst}");
    }
}

#[tokio::test]
async fn rpcs_not_implemented_answer_unimplemented() {
    let (_server, mut c) = client().await;
    let answers: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "ModelConfig",
            c.model_config(ModelConfigRequest::default())
                .await
                .map(drop),
        ),
        (
            "ModelStatistics",
            c.model_statistics(ModelStatisticsRequest::default())
                .await
                .map(drop),
        ),
        (
            "RepositoryIndex",
            c.repository_index(RepositoryIndexRequest::default())
                .await
                .map(drop),
        ),
        (
            "RepositoryModelLoad",
            c.repository_model_load(RepositoryModelLoadRequest::default())
                .await
                .map(drop),
        ),
        (
            "RepositoryModelUnload",
            c.repository_model_unload(RepositoryModelUnloadRequest::default())
                .await
                .map(drop),
        ),
        (
            "SystemSharedMemoryStatus",
            c.system_shared_memory_status(SystemSharedMemoryStatusRequest::default())
                .await
                .map(drop),
        ),
        (
            "SystemSharedMemoryRegister",
            c.system_shared_memory_register(SystemSharedMemoryRegisterRequest::default())
                .await
                .map(drop),
        ),
        (
            "SystemSharedMemoryUnregister",
            c.system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest::default())
                .await
                .map(drop),
        ),
        (
            "CudaSharedMemoryStatus",
            c.cuda_shared_memory_status(CudaSharedMemoryStatusRequest::default())
                .await
                .map(drop),
        ),
        (
            "CudaSharedMemoryRegister",
            c.cuda_shared_memory_register(CudaSharedMemoryRegisterRequest::default())
                .await
                .map(drop),
        ),
        (
            "CudaSharedMemoryUnregister",
            c.cuda_shared_memory_unregister(CudaSharedMemoryUnregisterRequest::default())
                .await
                .map(drop),
        ),
        (
            "TraceSetting",
            c.trace_setting(TraceSettingRequest::default())
                .await
                .map(drop),
        ),
        (
            "LogSettings",
            c.log_settings(LogSettingsRequest::default())
                .await
                .map(drop),
        ),
    ];
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, got)| got.as_ref().err().map(tonic::Status::code) != Some(Code::Unimplemented))
        .map(|(rpc, got)| format!("{rpc}: {got:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "expected UNIMPLEMENTED from:\n{}",
        wrong.join("\n")
    );
    // ModelStreamInfer is served: an embedding request on a stream gets its
    // one answer there.
    let mut stream = c
        .model_stream_infer(tonic::codegen::tokio_stream::once(infer_request(
            text_input(&[b"hi"]),
        )))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    assert_eq!(answer.error_message, "");
    let response = answer.infer_response.unwrap();
    assert_eq!(response.outputs[0].name, "embedding");
    assert_eq!(response.outputs[0].shape, vec![1, 384]);
    assert!(
        stream.message().await.unwrap().is_none(),
        "one request, one answer"
    );
}
