//! Text generation over the Open Inference Protocol, with the tensor names
//! of Triton's vLLM backend, so its clients work unchanged.
//!
//! Inputs (each one element, shape `[1]` or `[1, 1]`): `text_input`
//! (BYTES, required), `stream` (BOOL), `sampling_parameters` (BYTES: a
//! JSON object of vLLM's `SamplingParams`), `exclude_input_in_output`,
//! `return_finish_reason`, `return_num_input_tokens`,
//! `return_num_output_tokens` (BOOL). Outputs: `text_output` (BYTES),
//! and when asked `finish_reason` (BYTES), `num_input_tokens` and
//! `num_output_tokens` (UINT32).
//!
//! On ModelStreamInfer with `stream` true every response carries only the
//! new text (the prompt too in the first, if `exclude_input_in_output` is
//! false), and the last one the parameter `triton_final_response` true
//! with the finish reason; counts are per response. Otherwise one response
//! holds everything: the prompt and the output, unless
//! `exclude_input_in_output` (as the vLLM backend). Every response carries
//! the digest and ledger index parameters.

use std::collections::HashMap;

use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::model_infer_request::InferInputTensor;
use openmodel_proto::inference::model_infer_response::InferOutputTensor;
use openmodel_proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse};
use tonic::Status;

use super::split_raw_bytes;
use crate::generate::stop::FinishReason;

/// The prompt.
pub const TEXT_INPUT: &str = "text_input";
/// Stream the output.
pub const STREAM: &str = "stream";
/// vLLM's `SamplingParams` as JSON.
pub const SAMPLING_PARAMETERS: &str = "sampling_parameters";
/// Leave the prompt out of the output.
pub const EXCLUDE_INPUT: &str = "exclude_input_in_output";
/// Return `finish_reason`.
pub const RETURN_FINISH_REASON: &str = "return_finish_reason";
/// Return `num_input_tokens`.
pub const RETURN_INPUT_TOKENS: &str = "return_num_input_tokens";
/// Return `num_output_tokens`.
pub const RETURN_OUTPUT_TOKENS: &str = "return_num_output_tokens";
/// The generated text.
pub const TEXT_OUTPUT: &str = "text_output";
/// Why the sequence ended.
pub const FINISH_REASON: &str = "finish_reason";
/// Tokens of the prompt.
pub const NUM_INPUT_TOKENS: &str = "num_input_tokens";
/// Tokens generated.
pub const NUM_OUTPUT_TOKENS: &str = "num_output_tokens";
/// The parameter marking a stream's last response.
pub const FINAL_RESPONSE: &str = "triton_final_response";

/// The inputs of the generation model, for its metadata: name and type.
pub const INPUTS: [(&str, &str); 7] = [
    (TEXT_INPUT, "BYTES"),
    (STREAM, "BOOL"),
    (SAMPLING_PARAMETERS, "BYTES"),
    (EXCLUDE_INPUT, "BOOL"),
    (RETURN_FINISH_REASON, "BOOL"),
    (RETURN_INPUT_TOKENS, "BOOL"),
    (RETURN_OUTPUT_TOKENS, "BOOL"),
];

/// Its outputs, for its metadata.
pub const OUTPUTS: [(&str, &str); 4] = [
    (TEXT_OUTPUT, "BYTES"),
    (FINISH_REASON, "BYTES"),
    (NUM_INPUT_TOKENS, "UINT32"),
    (NUM_OUTPUT_TOKENS, "UINT32"),
];

/// A generation request, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerateCall {
    /// The prompt.
    pub prompt: String,
    /// Stream the output.
    pub stream: bool,
    /// `sampling_parameters`, when sent.
    pub sampling_parameters: Option<String>,
    /// `exclude_input_in_output`, when sent.
    pub exclude_input: Option<bool>,
    /// Return the finish reason.
    pub finish_reason: bool,
    /// Return the prompt's token count.
    pub input_tokens: bool,
    /// Return the output's token count.
    pub output_tokens: bool,
}

/// Decodes a generation request; `max_text_bytes` bounds the prompt and
/// the parameters' JSON.
pub fn decode(r: &ModelInferRequest, max_text_bytes: usize) -> Result<GenerateCall, Status> {
    if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order",
            r.raw_input_contents.len(),
            r.inputs.len()
        )));
    }
    let mut call = GenerateCall::default();
    let mut seen = Vec::new();
    for (i, input) in r.inputs.iter().enumerate() {
        let Some((_, datatype)) = INPUTS.iter().find(|(n, _)| *n == input.name) else {
            return Err(Status::invalid_argument(format!(
                "unknown input {:?}; the inputs are {}",
                input.name,
                INPUTS.map(|(n, _)| n).join(", ")
            )));
        };
        if seen.contains(&input.name.as_str()) {
            return Err(Status::invalid_argument(format!(
                "input {:?} is sent twice",
                input.name
            )));
        }
        seen.push(input.name.as_str());
        if input.datatype != *datatype {
            return Err(Status::invalid_argument(format!(
                "input {:?} must be {datatype}, not {}",
                input.name, input.datatype
            )));
        }
        if !matches!(input.shape.as_slice(), [1] | [1, 1]) {
            return Err(Status::invalid_argument(format!(
                "input {:?} must hold one element (shape [1]); got shape {:?}",
                input.name, input.shape
            )));
        }
        let raw = r.raw_input_contents.get(i).map(Vec::as_slice);
        if *datatype == "BOOL" {
            let value = bool_value(input, raw)?;
            match input.name.as_str() {
                STREAM => call.stream = value,
                EXCLUDE_INPUT => call.exclude_input = Some(value),
                RETURN_FINISH_REASON => call.finish_reason = value,
                RETURN_INPUT_TOKENS => call.input_tokens = value,
                _ => call.output_tokens = value,
            }
        } else {
            let text = bytes_value(input, raw, max_text_bytes)?;
            if input.name == TEXT_INPUT {
                call.prompt = text;
            } else {
                call.sampling_parameters = Some(text);
            }
        }
    }
    if !seen.contains(&TEXT_INPUT) {
        return Err(Status::invalid_argument(format!(
            "input {TEXT_INPUT:?} (BYTES, the prompt) is missing"
        )));
    }
    for o in &r.outputs {
        if !OUTPUTS.iter().any(|(n, _)| *n == o.name) {
            return Err(Status::invalid_argument(format!(
                "unknown output {:?}; the outputs are {}",
                o.name,
                OUTPUTS.map(|(n, _)| n).join(", ")
            )));
        }
    }
    Ok(call)
}

fn bool_value(input: &InferInputTensor, raw: Option<&[u8]>) -> Result<bool, Status> {
    let from_contents = input.contents.as_ref().map(|c| c.bool_contents.as_slice());
    match (raw, from_contents) {
        (Some([b]), _) if *b <= 1 => Ok(*b == 1),
        (Some(other), _) => Err(Status::invalid_argument(format!(
            "input {:?}: a BOOL element is one byte, 0 or 1; got {} bytes",
            input.name,
            other.len()
        ))),
        (None, Some([b])) => Ok(*b),
        _ => Err(Status::invalid_argument(format!(
            "input {:?} needs one BOOL element (raw_input_contents or contents.bool_contents)",
            input.name
        ))),
    }
}

fn bytes_value(input: &InferInputTensor, raw: Option<&[u8]>, max: usize) -> Result<String, Status> {
    let bytes: Vec<u8> = match (raw, &input.contents) {
        (Some(raw), _) => split_raw_bytes(raw, 1)
            .map_err(|e| Status::invalid_argument(format!("input {:?}: {e}", input.name)))?
            .remove(0)
            .to_vec(),
        (None, Some(c)) if c.bytes_contents.len() == 1 => c.bytes_contents[0].clone(),
        _ => {
            return Err(Status::invalid_argument(format!(
                "input {:?} needs one BYTES element (raw_input_contents or contents.bytes_contents)",
                input.name
            )));
        }
    };
    if bytes.len() > max {
        return Err(Status::invalid_argument(format!(
            "input {:?} is {} bytes; at most {max} are accepted (--max-text-bytes)",
            input.name,
            bytes.len()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Status::invalid_argument(format!(
            "input {:?} is not valid UTF-8 (bad byte at offset {})",
            input.name,
            e.utf8_error().valid_up_to()
        ))
    })
}

/// What one response holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Piece {
    /// Text for `text_output`.
    pub text: String,
    /// The finish reason, on the last response.
    pub finish: Option<FinishReason>,
    /// Tokens of the prompt.
    pub input_tokens: usize,
    /// Tokens generated in this response (all of them when not streaming).
    pub output_tokens: usize,
}

/// The response for `piece` of `call`: outputs the call asked for, and
/// the parameters every response has (`parameters`), the final flag when
/// streaming.
pub fn response(
    call: &GenerateCall,
    piece: &Piece,
    base: ModelInferResponse,
    parameters: HashMap<String, InferParameter>,
) -> ModelInferResponse {
    let mut out = base;
    out.parameters = parameters;
    let mut push = |name: &str, datatype: &str, raw: Vec<u8>| {
        out.outputs.push(InferOutputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![1],
            parameters: HashMap::new(),
            contents: None,
        });
        out.raw_output_contents.push(raw);
    };
    push(TEXT_OUTPUT, "BYTES", bytes_element(&piece.text));
    if call.finish_reason
        && let Some(reason) = piece.finish
    {
        push(FINISH_REASON, "BYTES", bytes_element(reason.as_str()));
    }
    if call.input_tokens {
        push(
            NUM_INPUT_TOKENS,
            "UINT32",
            (piece.input_tokens as u32).to_le_bytes().to_vec(),
        );
    }
    if call.output_tokens {
        push(
            NUM_OUTPUT_TOKENS,
            "UINT32",
            (piece.output_tokens as u32).to_le_bytes().to_vec(),
        );
    }
    if call.stream {
        out.parameters.insert(
            FINAL_RESPONSE.into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::BoolParam(piece.finish.is_some())),
            },
        );
    }
    out
}

/// One BYTES element as Triton lays it out: a 4-byte little-endian length,
/// then the bytes.
fn bytes_element(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmodel_proto::inference::InferTensorContents;

    fn input(name: &str, datatype: &str) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![1],
            parameters: HashMap::new(),
            contents: None,
        }
    }

    fn request(inputs: Vec<(&str, &str, Vec<u8>)>) -> ModelInferRequest {
        ModelInferRequest {
            inputs: inputs.iter().map(|(n, d, _)| input(n, d)).collect(),
            raw_input_contents: inputs.into_iter().map(|(_, _, raw)| raw).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_the_vllm_backend_inputs() {
        let r = request(vec![
            (TEXT_INPUT, "BYTES", bytes_element("Hello")),
            (STREAM, "BOOL", vec![1]),
            (
                SAMPLING_PARAMETERS,
                "BYTES",
                bytes_element("{\"max_tokens\": 4}"),
            ),
            (EXCLUDE_INPUT, "BOOL", vec![0]),
            (RETURN_FINISH_REASON, "BOOL", vec![1]),
        ]);
        let call = decode(&r, 1024).unwrap();
        assert_eq!(call.prompt, "Hello");
        assert!(call.stream && call.finish_reason && !call.input_tokens);
        assert_eq!(call.exclude_input, Some(false));
        assert_eq!(
            call.sampling_parameters.as_deref(),
            Some("{\"max_tokens\": 4}")
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let cases = [
            (request(vec![(STREAM, "BOOL", vec![1])]), "missing"),
            (
                request(vec![(TEXT_INPUT, "FP32", vec![0; 4])]),
                "must be BYTES",
            ),
            (
                request(vec![
                    (TEXT_INPUT, "BYTES", bytes_element("x")),
                    ("temperature", "FP32", vec![0; 4]),
                ]),
                "unknown input",
            ),
            (
                request(vec![
                    (TEXT_INPUT, "BYTES", bytes_element("x")),
                    (STREAM, "BOOL", vec![2]),
                ]),
                "0 or 1",
            ),
            (
                request(vec![(TEXT_INPUT, "BYTES", vec![9, 0, 0, 0, b'x'])]),
                "text_input",
            ),
            (
                request(vec![(TEXT_INPUT, "BYTES", bytes_element(&"x".repeat(100)))]),
                "--max-text-bytes",
            ),
            (
                request(vec![(
                    TEXT_INPUT,
                    "BYTES",
                    bytes_element("\u{e9}")[..5].to_vec(),
                )]),
                "text_input",
            ),
        ];
        for (r, want) in cases {
            let e = decode(&r, 64).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(want), "{want}: {}", e.message());
        }
        let mut twice = request(vec![
            (TEXT_INPUT, "BYTES", bytes_element("a")),
            (TEXT_INPUT, "BYTES", bytes_element("b")),
        ]);
        assert!(decode(&twice, 64).unwrap_err().message().contains("twice"));
        twice.inputs[0].shape = vec![2];
        assert!(
            decode(&twice, 64)
                .unwrap_err()
                .message()
                .contains("one element")
        );
    }

    #[test]
    fn contents_work_as_well_as_raw_bytes() {
        let mut text = input(TEXT_INPUT, "BYTES");
        text.contents = Some(InferTensorContents {
            bytes_contents: vec![b"Hi".to_vec()],
            ..Default::default()
        });
        let mut stream = input(STREAM, "BOOL");
        stream.contents = Some(InferTensorContents {
            bool_contents: vec![true],
            ..Default::default()
        });
        let r = ModelInferRequest {
            inputs: vec![text, stream],
            ..Default::default()
        };
        let call = decode(&r, 64).unwrap();
        assert_eq!((call.prompt.as_str(), call.stream), ("Hi", true));
    }

    #[test]
    fn responses_carry_what_was_asked_and_the_final_flag() {
        let call = GenerateCall {
            stream: true,
            finish_reason: true,
            output_tokens: true,
            ..Default::default()
        };
        let piece = Piece {
            text: "ok".into(),
            finish: Some(FinishReason::Length),
            input_tokens: 3,
            output_tokens: 2,
        };
        let r = response(&call, &piece, ModelInferResponse::default(), HashMap::new());
        let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, [TEXT_OUTPUT, FINISH_REASON, NUM_OUTPUT_TOKENS]);
        assert_eq!(r.raw_output_contents[0], bytes_element("ok"));
        assert_eq!(r.raw_output_contents[1], bytes_element("length"));
        assert_eq!(r.raw_output_contents[2], 2u32.to_le_bytes());
        assert_eq!(
            r.parameters[FINAL_RESPONSE].parameter_choice,
            Some(ParameterChoice::BoolParam(true))
        );
    }
}
