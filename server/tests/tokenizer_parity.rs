//! SmolLM2's tokenizer, built from its GGUF metadata alone, against the
//! references (server/tests/fixtures/smollm2_tokenization.json, made by
//! scripts/make-generation-reference.sh from the same file): the token ids
//! of transformers' tokenizer for every string of the corpus (unicode,
//! code, whitespace runs, numbers, special tokens inside text), the
//! decoding back, and the chat template rendered and tokenized as
//! transformers does; the same through `tokenizer.json` and
//! `tokenizer_config.json` in the model's folder.

mod common;

use common::smollm2_dir;
use openmodel_server::generate::Model;
use openmodel_server::generate::chat::{ChatTemplate, Message};
use openmodel_server::model::gguf::Gguf;
use openmodel_server::model::gguf_tokenizer::{self, GgufTokenizer};
use tokenizers::Tokenizer;

const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn tokenizer() -> GgufTokenizer {
    let file = smollm2_dir().join(GGUF);
    gguf_tokenizer::from_gguf(&Gguf::open(&file).unwrap()).unwrap()
}

fn encode(t: &GgufTokenizer, text: &str) -> Vec<u32> {
    assert!(!t.add_bos, "SmolLM2 adds no BOS token");
    t.tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

fn fixture() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smollm2_tokenization.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Checks `encode` (and `tokenizer`'s decoding back) against the corpus:
/// transformers' ids, or llama.cpp's where the two references differ.
fn check_corpus(tokenizer: &Tokenizer, encode: impl Fn(&str) -> Vec<u32>) {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "the corpus has {} strings", cases.len());
    let mut wrong = Vec::new();
    let mut as_llama_cpp = 0;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got = encode(text);
        let want = ids(&case["ids"]);
        if got != want {
            // transformers' GGUF converter builds a plain byte-level
            // pre-tokenizer, without the digit splitting llama.cpp's
            // `smollm` pre-tokenizer (and SmolLM2's own tokenizer.json)
            // applies first; it differs only on numerals other than 0-9
            // after a space. There llama.cpp is the reference.
            let llama_cpp = case.get("llamacpp_ids").map(ids);
            if llama_cpp.as_ref() != Some(&got) {
                wrong.push(format!(
                    "{}: {text:?}: {got:?} != transformers {want:?}, llama.cpp {llama_cpp:?}",
                    case["name"]
                ));
            } else {
                as_llama_cpp += 1;
            }
            continue;
        }
        if case["decodes_back"].as_bool() == Some(true) {
            let back = tokenizer.decode(&got, false).unwrap();
            assert_eq!(back, text, "{} does not decode back", case["name"]);
        }
    }
    eprintln!(
        "{} of {} strings tokenize as transformers does, {as_llama_cpp} as llama.cpp does where the two differ",
        cases.len() - as_llama_cpp - wrong.len(),
        cases.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {} strings tokenize differently:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// Checks that `template` renders the fixture's chats as transformers does,
/// and `encode` tokenizes them alike.
fn check_chats(template: &ChatTemplate, encode: impl Fn(&str) -> Vec<u32>) {
    for chat in fixture()["chats"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(chat["messages"].clone()).unwrap();
        let rendered = template.render(&messages, true).unwrap();
        assert_eq!(
            rendered,
            chat["rendered"].as_str().unwrap(),
            "{}",
            chat["name"]
        );
        assert_eq!(encode(&rendered), ids(&chat["ids"]), "{}", chat["name"]);
    }
}

#[test]
fn the_gguf_tokenizer_matches_transformers_on_the_whole_corpus() {
    let t = tokenizer();
    check_corpus(&t.tokenizer, |text| encode(&t, text));
}

#[test]
fn the_chat_template_renders_and_tokenizes_as_transformers() {
    let t = tokenizer();
    let source = t
        .chat_template
        .as_deref()
        .expect("SmolLM2's GGUF has a chat template");
    let template = ChatTemplate::new(source, String::new(), "<|im_end|>".into()).unwrap();
    check_chats(&template, |text| encode(&t, text));
    assert_eq!(t.eos, Some(2), "SmolLM2 ends its turns with <|im_end|>");
}

/// A folder with `tokenizer.json` and `tokenizer_config.json` beside the
/// GGUF file (as Hugging Face repositories of GGUF files often are): the
/// model takes its tokenizer, end token and chat template from those
/// files, and tokenizes the corpus as the references do. The two files are
/// SmolLM2's tokenizer written by the `tokenizers` library and its
/// template, in the layout transformers reads.
#[test]
fn a_folder_with_tokenizer_json_takes_its_tokenizer_and_template_from_there() {
    let t = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(smollm2_dir().join(GGUF), dir.path().join(GGUF)).unwrap();
    t.tokenizer
        .save(dir.path().join("tokenizer.json"), false)
        .unwrap();
    let config = serde_json::json!({
        "chat_template": t.chat_template,
        "bos_token": null,
        "eos_token": {"content": "<|im_end|>", "special": true},
        "add_bos_token": false,
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let model = Model::load(dir.path()).unwrap();
    check_corpus(&model.tokenizer, |text| model.encode(text).unwrap());
    let template = model
        .chat
        .as_ref()
        .expect("the template of tokenizer_config.json");
    check_chats(template, |text| model.encode(text).unwrap());
    assert_eq!(model.eos, vec![2], "eos_token of tokenizer_config.json");

    // It is that file the model reads: a broken one is refused by name.
    std::fs::write(dir.path().join("tokenizer.json"), "{").unwrap();
    let err = Model::load(dir.path())
        .err()
        .expect("a broken tokenizer.json");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
