//! Autoregressive generation: the prompt runs through the model in chunks, then one token
//! at a time with the KV cache, until `max_new` tokens, an end-of-generation token, a full
//! context, or the caller says stop.

use super::sampler::{Sampler, SamplerConfig};
use crate::error::{Error, ModelError, Result};
use crate::gguf::GgufFile;
use crate::lora::Adapter;
use crate::model::{Activations, KvCache, Model};
use crate::tokenizer::Vocab;

/// Tokens per forward call while reading the prompt.
pub const PROMPT_CHUNK: usize = 512;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// New tokens at most.
    pub max_new: usize,
    pub sampler: SamplerConfig,
    /// Stop after emitting one of these (end-of-generation ids); empty = never.
    pub stop_ids: Vec<u32>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new` tokens were produced.
    Length,
    /// An end-of-generation token was produced (it is included in the output).
    EndOfGeneration,
    /// The model's context is full.
    ContextFull,
    /// The callback asked to stop.
    Cancelled,
}

/// Generates after `prompt`, calling `on_token` with each new id (return `false` to stop).
/// Returns the new ids and why generation stopped.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    params: &GenerateParams,
    on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    generate_with(
        model,
        model.adapter().map(|a| &**a),
        prompt,
        params,
        on_token,
    )
}

/// Memory limits of a generation (from a memory plan): tokens per prompt-processing call
/// and positions the KV cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateLimits {
    pub prompt_chunk: usize,
    /// At most this many positions (capped by the model's context).
    pub context: usize,
}

impl Default for GenerateLimits {
    fn default() -> Self {
        GenerateLimits {
            prompt_chunk: PROMPT_CHUNK,
            context: usize::MAX,
        }
    }
}

/// [`generate`] with an explicit adapter (or none) instead of the model's own — e.g. the
/// adapter a trainer is training, without a reload.
pub fn generate_with(
    model: &Model,
    adapter: Option<&Adapter>,
    prompt: &[u32],
    params: &GenerateParams,
    on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    generate_limited(
        model,
        adapter,
        prompt,
        params,
        GenerateLimits::default(),
        on_token,
    )
}

/// [`generate_with`] inside memory limits.
pub fn generate_limited(
    model: &Model,
    adapter: Option<&Adapter>,
    prompt: &[u32],
    params: &GenerateParams,
    limits: GenerateLimits,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    params.sampler.validate().map_err(Error::InvalidArgument)?;
    if prompt.is_empty() {
        return Err(Error::InvalidArgument(
            "the prompt is empty: give at least one token (e.g. BOS)".into(),
        ));
    }
    let cfg = &model.cfg;
    for &t in prompt {
        if t as usize >= cfg.n_vocab {
            return Err(ModelError::TokenOutOfRange {
                token: t,
                vocab: cfg.n_vocab,
            }
            .into());
        }
    }
    if prompt.len() > cfg.n_ctx {
        return Err(ModelError::ContextOverflow {
            len: prompt.len(),
            context: cfg.n_ctx,
        }
        .into());
    }
    let context = cfg.n_ctx.min(limits.context);
    if prompt.len() > context {
        return Err(ModelError::ContextOverflow {
            len: prompt.len(),
            context,
        }
        .into());
    }
    let capacity = (prompt.len() + params.max_new).min(context);
    let mut cache = KvCache::new(cfg, capacity)?;
    let mut act = Activations::for_adapter(
        cfg,
        adapter,
        limits.prompt_chunk.clamp(1, PROMPT_CHUNK).min(prompt.len()),
    );
    let mut logits = vec![0f32; cfg.n_vocab];
    let mut sampler = Sampler::new(params.sampler);
    for chunk in prompt.chunks(act.capacity()) {
        model.forward_with(chunk, &mut cache, &mut act, adapter)?;
    }
    let mut out = Vec::with_capacity(params.max_new);
    loop {
        if out.len() == params.max_new {
            return Ok((out, StopReason::Length));
        }
        let c = cfg.n_embd;
        let hidden = act.hidden();
        model.logits(&hidden[hidden.len() - c..], &mut logits);
        let next = sampler.sample(&logits);
        out.push(next);
        if !on_token(next) {
            return Ok((out, StopReason::Cancelled));
        }
        if params.stop_ids.contains(&next) {
            return Ok((out, StopReason::EndOfGeneration));
        }
        if out.len() == params.max_new {
            return Ok((out, StopReason::Length));
        }
        if cache.len() == cache.capacity() {
            return Ok((out, StopReason::ContextFull));
        }
        model.forward_with(&[next], &mut cache, &mut act, adapter)?;
    }
}

/// End-of-generation ids of a model: EOS, EOT and EOM from the tokenizer metadata plus the
/// end-of-turn tokens llama.cpp recognises by their text (see
/// [`crate::tokenizer::Tokenizer::eog_ids`]). A file whose vocabulary cannot be read still
/// stops at the EOS/EOT/EOM keys it has.
pub fn end_of_generation_ids(f: &GgufFile) -> Result<Vec<u32>> {
    if let Ok(v) = Vocab::from_gguf(f) {
        return Ok(v.eog_ids().to_vec());
    }
    let mut ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = f.opt_u32(key)? {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
