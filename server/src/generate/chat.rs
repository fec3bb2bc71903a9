//! Chat templates: the Jinja template a model ships (in
//! `tokenizer_config.json` or GGUF metadata) rendered with minijinja, as
//! TGI and mistral.rs render it, with Python's string methods
//! (`.strip()`, `.startswith()`…) and `raise_exception`, and a fuel limit
//! so that no conversation makes rendering run away.

use minijinja::{Environment, Error as JinjaError, ErrorKind, context};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Steps of template execution one rendering may take.
const FUEL: u64 = 2_000_000;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (or another role the template knows).
    pub role: String,
    /// The text.
    pub content: String,
}

/// A model's chat template, compiled.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the texts of the special
    /// tokens templates may name.
    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(FUEL));
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| {
                Error::BadModel(format!("the model's chat template does not compile: {e}"))
            })?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened
    /// when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| Error::BadModel(format!("chat template: {e}")))?;
        template
            .render(context! {
                messages => messages
                    .iter()
                    .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
                    .collect::<Vec<_>>(),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(|e| {
                Error::BadInput(format!(
                    "the conversation does not fit the model's chat template: {e}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (its GGUF metadata).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(text: &str) -> Message {
        Message {
            role: "user".into(),
            content: text.into(),
        }
    }

    #[test]
    fn renders_chatml_with_the_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2, String::new(), "<|im_end|>".into()).unwrap();
        let text = t.render(&[user("Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception_work_and_loops_run_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% if messages[0].content.strip().startswith('x') %}{{ raise_exception('no x') }}{% endif %}ok",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert_eq!(t.render(&[user(" y")], false).unwrap(), "ok");
        let e = t.render(&[user(" x")], false).unwrap_err().to_string();
        assert!(e.contains("no x"), "{e}");
        let slow = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let e = slow.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("fuel"), "{e}");
        assert!(ChatTemplate::new("{% if %}", String::new(), String::new()).is_err());
    }
}
