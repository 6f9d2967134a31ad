//! Raw records → token ids with a target mask, using the model's tokenizer and chat
//! template. BOS is added as the model's `add_bos_token` says; text and completion records
//! end with EOS, which is a target (so the model learns to stop).

use super::raw::RawRecord;
use super::TokenRecord;
use crate::tokenizer::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// How records become tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Prompt tokens of prompt/completion records are not targets (default true).
    pub mask_prompt: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { mask_prompt: true }
    }
}

/// Tokenizes records of any text format.
pub struct Encoder<'a> {
    pub tok: &'a Tokenizer,
    pub chat: Option<&'a ChatTemplate>,
    pub opts: EncodeOptions,
}

impl Encoder<'_> {
    fn bos(&self) -> Option<u32> {
        if self.tok.add_bos() {
            self.tok.bos()
        } else {
            None
        }
    }

    /// The tokens of one record; the error says what is wrong with it.
    pub fn encode(&self, r: &RawRecord) -> Result<TokenRecord, String> {
        match r {
            RawRecord::Ids(rec) => Ok(rec.clone()),
            RawRecord::Text(text) => {
                if text.is_empty() {
                    return Err("\"text\" is empty".into());
                }
                let (ids, _) = self.tok.encode_with_offsets(text, false, false);
                Ok(self.framed(ids, |_| true))
            }
            RawRecord::PromptCompletion { prompt, completion } => {
                if completion.is_empty() {
                    return Err("\"completion\" is empty: nothing to train on".into());
                }
                // One pass over the joined text, so the tokens at the seam are the ones the
                // model sees at inference; a token belongs to the completion when it covers
                // any of its bytes.
                let full = format!("{prompt}{completion}");
                let (ids, offs) = self.tok.encode_with_offsets(&full, false, false);
                let cut = prompt.len();
                let mask_prompt = self.opts.mask_prompt;
                let in_completion: Vec<bool> = offs
                    .iter()
                    .map(|o| o.end > cut && o.end > o.start)
                    .collect();
                let mut k = 0;
                Ok(self.framed(ids, |_| {
                    let t = !mask_prompt || in_completion[k];
                    k += 1;
                    t
                }))
            }
            RawRecord::Chat(messages) => {
                let tmpl = self.chat.ok_or(
                    "chat records need the model's chat template (tokenizer.chat_template), which this model does not have",
                )?;
                let rendered = tmpl.render(messages, false);
                // Templates that write BOS themselves must not get a second one.
                let writes_bos = self
                    .tok
                    .bos()
                    .and_then(|b| self.tok.token_text(b))
                    .is_some_and(|b| rendered.text.starts_with(b));
                let t = rendered.tokenize(self.tok, !writes_bos);
                let mut targets = t.targets;
                if let Some(first) = targets.first_mut() {
                    *first = false;
                }
                if !targets.iter().any(|&x| x) {
                    return Err(
                        "the rendered conversation has no assistant tokens to train on".into(),
                    );
                }
                Ok(TokenRecord::new(t.ids, targets))
            }
        }
    }

    /// BOS (if the model adds one) + `ids` + EOS, with `is_target` deciding for each of
    /// `ids`; EOS is a target, BOS never.
    fn framed(&self, ids: Vec<u32>, mut is_target: impl FnMut(usize) -> bool) -> TokenRecord {
        let mut out = Vec::with_capacity(ids.len() + 2);
        let mut targets = Vec::with_capacity(ids.len() + 2);
        if let Some(b) = self.bos() {
            out.push(b);
            targets.push(false);
        }
        for (i, id) in ids.into_iter().enumerate() {
            out.push(id);
            targets.push(is_target(i));
        }
        if let Some(e) = self.tok.eos() {
            out.push(e);
            targets.push(true);
        }
        if let Some(t) = targets.first_mut() {
            *t = false; // nothing predicts the first token
        }
        TokenRecord::new(out, targets)
    }
}
