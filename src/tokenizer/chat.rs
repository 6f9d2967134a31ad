//! Chat templates without a Jinja engine: the template text in `tokenizer.chat_template` is
//! recognised by its signature, and the family's format is rendered by hand.
//!
//! Families (named as llama.cpp's `llama_chat_apply_template` names them; detection follows
//! its `llm_chat_detect_template`):
//!
//! | name | signature | format |
//! | --- | --- | --- |
//! | `chatml` (Qwen, SmolLM2) | `<\|im_start\|>` | `<\|im_start\|>{role}\n{content}<\|im_end\|>\n` |
//! | `qwen3` | `<\|im_start\|>`, `</think>`, `reasoning_content`, `last_query_index` | ChatML with Qwen3's `<think>` blocks: kept after the last user turn (an empty one on the last assistant turn), dropped before it (rendered as transformers renders Qwen3-0.6B's template) |
//! | `llama3` | `<\|start_header_id\|>` and `<\|end_header_id\|>` | `<\|start_header_id\|>{role}<\|end_header_id\|>\n\n{content, trimmed}<\|eot_id\|>` |
//! | `llama2`, `llama2-sys`, `llama2-sys-bos`, `llama2-sys-strip` | `[INST]` (+ `<<SYS>>`, `bos_token + '[INST]`, `content.strip()`) | `[INST] {user} [/INST]{assistant}</s>` |
//! | `mistral-v1`, `mistral-v3`, `mistral-v3-tekken`, `mistral-v7` | `[INST]` with `' [INST] ' + system_message`, `[AVAILABLE_TOOLS]` or `[SYSTEM_PROMPT]` | Mistral's published formats |
//! | `zephyr` | `<\|user\|>`, `<\|assistant\|>` and an end of turn (`eos_token` or `<\|endoftext\|>`) | `<\|{role}\|>\n{content}{eos}\n` |
//! | `phi3` | `<\|assistant\|>` and `<\|end\|>` | `<\|{role}\|>\n{content}<\|end\|>\n` |
//! | `gemma` | `<start_of_turn>` | `<start_of_turn>{user\|model}\n{content, trimmed}<end_of_turn>\n`, the system message merged into the first user turn |
//!
//! Anything else: a [`CustomTemplate`] (a pattern per role with `{content}` in it).
//!
//! The rendered text carries no BOS: the tokenizer adds it per `add_bos_token`, as llama.cpp
//! does. [`Rendered::assistant_spans`] are the byte ranges of each assistant message's content
//! together with the end-of-turn marker that follows it — what a fine-tuned model must learn to
//! produce — and [`Rendered::tokenize`] turns them into per-token training targets.

use std::ops::Range;

use super::Tokenizer;
use crate::error::{Result, TokenizerError};
use crate::gguf::GgufFile;

/// Who speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// `system`, `user`, `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Parses `system`, `user`, `assistant`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
}

/// A conversation rendered to text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// Byte ranges of `text` that the assistant says (content and end-of-turn marker).
    pub assistant_spans: Vec<Range<usize>>,
}

/// A rendered conversation as tokens, with the tokens to train on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTokens {
    pub ids: Vec<u32>,
    /// `targets[i]`: token `i` overlaps an assistant span.
    pub targets: Vec<bool>,
}

impl Rendered {
    /// Tokenizes the text (special tokens parsed, BOS/EOS per the model when `add_special`)
    /// and marks every token that overlaps an assistant span.
    pub fn tokenize(&self, tok: &Tokenizer, add_special: bool) -> ChatTokens {
        let (ids, offs) = tok.encode_with_offsets(&self.text, add_special, true);
        let targets = offs
            .iter()
            .map(|r| {
                r.start < r.end
                    && self
                        .assistant_spans
                        .iter()
                        .any(|s| r.start < s.end && s.start < r.end)
            })
            .collect();
        ChatTokens { ids, targets }
    }
}

/// A pattern per role, each with one `{content}`: the simple template for models whose
/// format is not built in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomTemplate {
    system: (String, String),
    user: (String, String),
    assistant: (String, String),
    generation_prompt: String,
}

const CONTENT: &str = "{content}";

fn split_pattern(role: &str, p: &str) -> Result<(String, String)> {
    let Some(i) = p.find(CONTENT) else {
        return Err(TokenizerError::BadCustomTemplate {
            reason: format!("the {role} pattern {p:?} has no {CONTENT}"),
        }
        .into());
    };
    let (a, b) = (&p[..i], &p[i + CONTENT.len()..]);
    if b.contains(CONTENT) {
        return Err(TokenizerError::BadCustomTemplate {
            reason: format!("the {role} pattern {p:?} has {CONTENT} more than once"),
        }
        .into());
    }
    Ok((a.to_owned(), b.to_owned()))
}

impl CustomTemplate {
    /// Patterns like `"<|user|>\n{content}</s>\n"`; `generation_prompt` is what opens the
    /// assistant's turn (e.g. `"<|assistant|>\n"`).
    pub fn new(
        system: &str,
        user: &str,
        assistant: &str,
        generation_prompt: &str,
    ) -> Result<CustomTemplate> {
        Ok(CustomTemplate {
            system: split_pattern("system", system)?,
            user: split_pattern("user", user)?,
            assistant: split_pattern("assistant", assistant)?,
            generation_prompt: generation_prompt.to_owned(),
        })
    }
}

/// Variants of the `[INST]` format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstVariant {
    Llama2,
    Llama2Sys,
    Llama2SysBos,
    Llama2SysStrip,
    MistralV1,
    MistralV3,
    MistralV3Tekken,
    MistralV7,
}

/// A chat format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Family {
    ChatMl,
    /// Qwen3: ChatML whose assistant turns carry `<think>` blocks (see `render_qwen3`).
    Qwen3,
    Llama3,
    Inst(InstVariant),
    Zephyr,
    Phi3,
    Gemma,
    Custom(CustomTemplate),
}

/// A chat template: a [`Family`] plus the end-of-turn text Zephyr-style templates take from
/// `eos_token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    family: Family,
    eos: String,
}

const NAMES: &[(&str, Family)] = &[
    ("chatml", Family::ChatMl),
    ("qwen3", Family::Qwen3),
    ("llama3", Family::Llama3),
    ("llama2", Family::Inst(InstVariant::Llama2)),
    ("llama2-sys", Family::Inst(InstVariant::Llama2Sys)),
    ("llama2-sys-bos", Family::Inst(InstVariant::Llama2SysBos)),
    (
        "llama2-sys-strip",
        Family::Inst(InstVariant::Llama2SysStrip),
    ),
    ("mistral-v1", Family::Inst(InstVariant::MistralV1)),
    ("mistral-v3", Family::Inst(InstVariant::MistralV3)),
    (
        "mistral-v3-tekken",
        Family::Inst(InstVariant::MistralV3Tekken),
    ),
    ("mistral-v7", Family::Inst(InstVariant::MistralV7)),
    ("zephyr", Family::Zephyr),
    ("phi3", Family::Phi3),
    ("gemma", Family::Gemma),
];

fn detect(t: &str) -> Option<Family> {
    if let Some((_, f)) = NAMES.iter().find(|(n, _)| *n == t) {
        return Some(f.clone());
    }
    let has = |s: &str| t.contains(s);
    if has("<|im_start|>") && has("</think>") && has("reasoning_content") && has("last_query_index")
    {
        return Some(Family::Qwen3);
    }
    if has("<|im_start|>") {
        // Phi-4 (`<|im_sep|>`) and SmolVLM look alike but differ.
        return (!has("<|im_sep|>") && !has("<end_of_utterance>")).then_some(Family::ChatMl);
    }
    if t.starts_with("mistral") || has("[INST]") {
        use InstVariant::*;
        let v = if has("[SYSTEM_PROMPT]") {
            MistralV7
        } else if has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]") {
            if has(" [INST]") {
                MistralV1
            } else if has("\"[INST]\"") {
                MistralV3Tekken
            } else {
                MistralV3
            }
        } else if has("content.strip()") {
            Llama2SysStrip
        } else if has("bos_token + '[INST]") {
            Llama2SysBos
        } else if has("<<SYS>>") {
            Llama2Sys
        } else {
            Llama2
        };
        return Some(Family::Inst(v));
    }
    if has("<|assistant|>") && has("<|end|>") {
        return Some(Family::Phi3);
    }
    if has("<|user|>")
        && has("<|assistant|>")
        && (has("eos_token") || has("<|endoftext|>"))
        && !has("[gMASK]")
    {
        return Some(Family::Zephyr);
    }
    if has("<start_of_turn>") {
        return Some(Family::Gemma);
    }
    if has("<|start_header_id|>") && has("<|end_header_id|>") {
        return Some(Family::Llama3);
    }
    None
}

/// llama.cpp's `trim`: ASCII white space at both ends.
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r'))
}

impl ChatTemplate {
    /// A template by name (`chatml`, `qwen3`, `llama3`, `llama2`, `llama2-sys`, `llama2-sys-bos`,
    /// `llama2-sys-strip`, `mistral-v1`, `mistral-v3`, `mistral-v3-tekken`, `mistral-v7`,
    /// `zephyr`, `phi3`, `gemma`) or a Jinja template text recognised by its signature.
    /// Zephyr's end of turn is `<|endoftext|>` when the text spells it, else `</s>`
    /// (see [`ChatTemplate::with_eos`]).
    pub fn parse(template: &str) -> Result<ChatTemplate> {
        let family = detect(template).ok_or_else(|| {
            let head: String = template.chars().take(60).collect();
            TokenizerError::UnknownChatTemplate {
                hint: format!(
                    "{head:?}… matches none of chatml, qwen3, llama3, llama2/mistral [INST], zephyr, phi3, gemma; use a custom template"
                ),
            }
        })?;
        let eos = if template.contains("<|endoftext|>") && !template.contains("eos_token") {
            "<|endoftext|>"
        } else {
            "</s>"
        };
        Ok(ChatTemplate {
            family,
            eos: eos.to_owned(),
        })
    }

    /// The template of a model: `tokenizer.chat_template`, with the model's EOS text for
    /// templates that use `eos_token`.
    pub fn from_gguf(f: &GgufFile) -> Result<ChatTemplate> {
        let Some(t) = f.opt_str("tokenizer.chat_template")? else {
            return Err(TokenizerError::UnknownChatTemplate {
                hint: "the model has no tokenizer.chat_template; name one (chatml, llama3, ...) or give a custom template".into(),
            }
            .into());
        };
        let mut tmpl = ChatTemplate::parse(t)?;
        if t.contains("eos_token") {
            let eos_text = f.opt_u64("tokenizer.ggml.eos_token_id")?.and_then(|id| {
                f.opt_array("tokenizer.ggml.tokens")
                    .ok()
                    .flatten()
                    .and_then(|a| a.str_at(id as usize).map(str::to_owned))
            });
            if let Some(e) = eos_text {
                tmpl.eos = e;
            }
        }
        Ok(tmpl)
    }

    /// A user-given template.
    pub fn custom(t: CustomTemplate) -> ChatTemplate {
        ChatTemplate {
            family: Family::Custom(t),
            eos: String::new(),
        }
    }

    /// Sets the end-of-turn text of Zephyr-style templates (the model's EOS token text).
    pub fn with_eos(mut self, eos: impl Into<String>) -> ChatTemplate {
        self.eos = eos.into();
        self
    }

    /// The format.
    pub fn family(&self) -> &Family {
        &self.family
    }

    /// The llama.cpp name of the format (`"custom"` for a custom template).
    pub fn name(&self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, f)| *f == self.family)
            .map_or("custom", |(n, _)| n)
    }

    /// Renders `messages`; with `add_generation_prompt`, the text ends by opening the
    /// assistant's turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Rendered {
        let mut r = Builder::default();
        match &self.family {
            Family::ChatMl => {
                for m in messages {
                    r.text(&format!("<|im_start|>{}\n", m.role.as_str()));
                    r.turn(m.role, &m.content, "<|im_end|>");
                    r.text("\n");
                }
                if add_generation_prompt {
                    r.text("<|im_start|>assistant\n");
                }
            }
            Family::Qwen3 => render_qwen3(messages, add_generation_prompt, &mut r),
            Family::Llama3 => {
                for m in messages {
                    r.text(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n",
                        m.role.as_str()
                    ));
                    r.turn(m.role, trim(&m.content), "<|eot_id|>");
                }
                if add_generation_prompt {
                    r.text("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }
            }
            Family::Inst(v) => render_inst(*v, messages, &mut r),
            Family::Zephyr | Family::Phi3 => {
                let end = if self.family == Family::Phi3 {
                    "<|end|>"
                } else {
                    &self.eos
                };
                for m in messages {
                    r.text(&format!("<|{}|>\n", m.role.as_str()));
                    r.turn(m.role, &m.content, end);
                    r.text("\n");
                }
                if add_generation_prompt {
                    r.text("<|assistant|>\n");
                }
            }
            Family::Gemma => {
                let mut system = String::new();
                for m in messages {
                    if m.role == Role::System {
                        system.push_str(trim(&m.content));
                        continue;
                    }
                    let role = if m.role == Role::Assistant {
                        "model"
                    } else {
                        "user"
                    };
                    r.text(&format!("<start_of_turn>{role}\n"));
                    if !system.is_empty() && m.role != Role::Assistant {
                        r.text(&system);
                        r.text("\n\n");
                        system.clear();
                    }
                    r.turn(m.role, trim(&m.content), "<end_of_turn>");
                    r.text("\n");
                }
                if add_generation_prompt {
                    r.text("<start_of_turn>model\n");
                }
            }
            Family::Custom(c) => {
                for m in messages {
                    let (pre, post) = match m.role {
                        Role::System => &c.system,
                        Role::User => &c.user,
                        Role::Assistant => &c.assistant,
                    };
                    r.text(pre);
                    r.turn(m.role, &m.content, post);
                }
                if add_generation_prompt {
                    r.text(&c.generation_prompt);
                }
            }
        }
        r.finish()
    }
}

/// Qwen3's template (Qwen/Qwen3-0.6B, without tools): ChatML, and an assistant turn's
/// `<think>…</think>` reasoning (in its content) is kept only after the last user message —
/// there every assistant turn that has reasoning, and the last turn always (empty
/// reasoning when it has none), is written `<think>\n{reasoning}\n</think>\n\n{answer}`;
/// earlier turns keep only the answer. The generation prompt opens the assistant's turn
/// (the model then writes its own `<think>` block).
fn render_qwen3(messages: &[Message], add_generation_prompt: bool, r: &mut Builder) {
    // The last user message that is not a tool response.
    let tool_response =
        |c: &str| c.starts_with("<tool_response>") && c.ends_with("</tool_response>");
    let last_query = messages
        .iter()
        .rposition(|m| m.role == Role::User && !tool_response(&m.content))
        .unwrap_or(messages.len().saturating_sub(1));
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::System if i == 0 => {
                r.text("<|im_start|>system\n");
                r.text(&m.content);
                r.text("<|im_end|>\n");
            }
            Role::User | Role::System => {
                r.text(&format!("<|im_start|>{}\n", m.role.as_str()));
                r.text(&m.content);
                r.text("<|im_end|>\n");
            }
            Role::Assistant => {
                let (reasoning, answer) = match m.content.find("</think>") {
                    Some(_) => {
                        let after = m.content.rsplit("</think>").next().unwrap_or("");
                        let before = m.content.split("</think>").next().unwrap_or("");
                        let before = before.trim_end_matches('\n');
                        let inner = before.rsplit("<think>").next().unwrap_or(before);
                        (
                            inner.trim_start_matches('\n'),
                            after.trim_start_matches('\n'),
                        )
                    }
                    None => ("", m.content.as_str()),
                };
                let has_reasoning = m.content.contains("</think>") && !reasoning.is_empty();
                r.text("<|im_start|>assistant\n");
                let body = if i > last_query && (i + 1 == messages.len() || has_reasoning) {
                    format!(
                        "<think>\n{}\n</think>\n\n{}",
                        reasoning.trim_matches('\n'),
                        answer.trim_start_matches('\n')
                    )
                } else {
                    answer.to_string()
                };
                r.turn(Role::Assistant, &body, "<|im_end|>");
                r.text("\n");
            }
        }
    }
    if add_generation_prompt {
        r.text("<|im_start|>assistant\n");
    }
}

impl std::str::FromStr for ChatTemplate {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<ChatTemplate> {
        ChatTemplate::parse(s)
    }
}

/// Accumulates text and assistant spans.
#[derive(Default)]
struct Builder {
    text: String,
    spans: Vec<Range<usize>>,
}

impl Builder {
    fn text(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// `content` then `end`; an assistant's both are a target span.
    fn turn(&mut self, role: Role, content: &str, end: &str) {
        let start = self.text.len();
        self.text.push_str(content);
        self.text.push_str(end);
        if role == Role::Assistant && self.text.len() > start {
            self.spans.push(start..self.text.len());
        }
    }

    fn finish(self) -> Rendered {
        Rendered {
            text: self.text,
            assistant_spans: self.spans,
        }
    }
}

/// The `[INST]` family, as llama.cpp's built-in renderer writes it.
fn render_inst(v: InstVariant, messages: &[Message], r: &mut Builder) {
    use InstVariant::*;
    match v {
        MistralV7 => {
            for m in messages {
                match m.role {
                    Role::System => {
                        r.text(&format!("[SYSTEM_PROMPT] {}[/SYSTEM_PROMPT]", m.content))
                    }
                    Role::User => r.text(&format!("[INST] {}[/INST]", m.content)),
                    Role::Assistant => {
                        r.text(" ");
                        r.turn(m.role, &m.content, "</s>");
                    }
                }
            }
        }
        MistralV1 | MistralV3 | MistralV3Tekken => {
            let lead = if v == MistralV1 { " " } else { "" };
            let trail = if v == MistralV3Tekken { "" } else { " " };
            let mut inside = false;
            for m in messages {
                if !inside {
                    r.text(&format!("{lead}[INST]{trail}"));
                    inside = true;
                }
                match m.role {
                    Role::System => r.text(&format!("{}\n\n", m.content)),
                    Role::User => r.text(&format!("{}{lead}[/INST]", m.content)),
                    Role::Assistant => {
                        r.text(trail);
                        let c = if v == MistralV3 {
                            trim(&m.content)
                        } else {
                            &m.content
                        };
                        r.turn(m.role, c, "</s>");
                        inside = false;
                    }
                }
            }
        }
        Llama2 | Llama2Sys | Llama2SysBos | Llama2SysStrip => {
            let system_ok = v != Llama2;
            let bos_inside = v == Llama2SysBos;
            let strip = v == Llama2SysStrip;
            let mut inside = true;
            r.text("[INST] ");
            for m in messages {
                let content = if strip { trim(&m.content) } else { &m.content };
                if !inside {
                    inside = true;
                    r.text(if bos_inside { "<s>[INST] " } else { "[INST] " });
                }
                match m.role {
                    Role::System if system_ok => {
                        r.text(&format!("<<SYS>>\n{content}\n<</SYS>>\n\n"))
                    }
                    Role::System => r.text(&format!("{content}\n")),
                    Role::User => r.text(&format!("{content} [/INST]")),
                    Role::Assistant => {
                        r.turn(m.role, content, "</s>");
                        inside = false;
                    }
                }
            }
        }
    }
}
