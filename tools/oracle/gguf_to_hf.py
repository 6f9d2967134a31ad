#!/usr/bin/env python3
"""Builds an explicit Hugging Face model directory (config.json + model.safetensors) from a
GGUF file, for the oracle (tools/oracle/peft_reference.py) to load with
`from_pretrained(DIR)` instead of transformers' GGUF loader.

Why: transformers' `gguf_file=` loader silently drops exactly the features the synthetic
models test (qwen3 ignores `attention.key_length` and assumes head size 128; gemma3 ignores
`final_logit_softcapping` and the sliding-window settings; llama ignores `rope_freqs`). Here
every setting is written into the transformers config explicitly, from the GGUF metadata
as llama.cpp reads it, and every tensor is dequantized (gguf.quants, the reference
quantizer's inverse) and mapped back the way llama.cpp's converter (convert_hf_to_gguf.py)
mapped it forward:
  - llama, smollm3: attn_q / attn_k rows un-permuted (the converter's `permute`);
  - gemma3: every RMSNorm weight minus 1 (Gemma3RMSNorm computes x·(1 + w); the converter
    folded the 1 in), ffn_norm -> pre_feedforward_layernorm, post_attention_norm ->
    post_attention_layernorm, post_ffw_norm -> post_feedforward_layernorm, the attention
    scale as llama.cpp sets it (query_pre_attn_scalar = head size; n_embd / n_head for the
    62-layer 27B), sliding layers by llama.cpp's pattern rule;
  - qwen3: q_norm / k_norm per head;
  - phi3: attn_qkv -> qkv_proj, ffn_up (gate then up) -> gate_up_proj; partial rotary
    from rope.dimension_count; LongRoPE with the factors llama.cpp picks (long when the
    context exceeds rope.scaling.original_context_length, as with llama.cpp's default
    context) given as both long_factor and short_factor — transformers picks by each
    sequence's length instead — and rope.scaling.attn_factor as attention_factor; no
    sliding window (llama.cpp turns Phi's off);
  - lfm2: head_count_kv per layer (0: a conv layer), shortconv.in_proj/conv/out_proj ->
    conv.in_proj/conv (kernel unsqueezed back to (C, 1, L))/out_proj, attn_output ->
    self_attn.out_proj, q/k norms -> q_layernorm/k_layernorm, ffn_gate/up/down ->
    feed_forward.w1/w3/w2, token_embd_norm -> embedding_norm, intermediate_size as given
    (block_auto_adjust_ff_dim off: the converter wrote the adjusted size).

    gguf_to_hf.py MODEL.gguf OUTDIR [--llama3-rope FACTOR,LOW,HIGH,ORIG_CTX]

`--llama3-rope` sets rope_scaling = {"rope_type": "llama3", ...} for a llama file whose
`rope_freqs.weight` was written from those parameters (checked against the file).
"""
import argparse, json, os, sys

import numpy as np


def fields(reader):
    out = {}
    for k, f in reader.fields.items():
        try:
            out[k] = f.contents()
        except Exception:
            pass
    return out


def unpermute(w, n_head):
    # Inverse of llama.cpp's converter permute(w, n_head):
    #   w.reshape(n_head, 2, d // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def llama3_inv_freq_factors(head_dim, base, factor, low, high, orig):
    # transformers' _compute_llama3_parameters, as a per-pair divisor (llama.cpp's rope_freqs).
    inv = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wl, high_wl = orig / low, orig / high
    wl = 2 * np.pi / inv
    scaled = np.where(wl > low_wl, inv / factor, inv)
    smooth = (orig / wl - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wl < high_wl) * ~(wl > low_wl)
    new = np.where(is_medium, smoothed, scaled)
    return inv / new


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf"); ap.add_argument("out")
    ap.add_argument("--llama3-rope", default=None)
    a = ap.parse_args()
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import save_file

    r = GGUFReader(a.gguf)
    md = fields(r)
    arch = md["general.architecture"]
    k = lambda s, d=None: md.get(f"{arch}.{s}", d)
    n_embd, n_layer = k("embedding_length"), k("block_count")
    n_head = k("attention.head_count"); n_kv = k("attention.head_count_kv", n_head)
    kv_per_layer = n_kv if isinstance(n_kv, list) else None
    if kv_per_layer is not None:
        n_kv = next(x for x in kv_per_layer if x > 0)
    head_dim = k("attention.key_length", n_embd // n_head)
    tensors = {t.name: dequantize(t.data, t.tensor_type).astype(np.float32).reshape(
        [int(x) for x in reversed(t.shape)]) for t in r.tensors}
    n_vocab = tensors["token_embd.weight"].shape[0]
    tied = "output.weight" not in tensors
    base = float(k("rope.freq_base", 10000.0))
    eps = float(k("attention.layer_norm_rms_epsilon"))
    has_bias = "blk.0.attn_q.bias" in tensors
    common = dict(vocab_size=n_vocab, hidden_size=n_embd, intermediate_size=k("feed_forward_length"),
                  num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_kv,
                  head_dim=head_dim, max_position_embeddings=k("context_length"), rms_norm_eps=eps,
                  tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    scaling = None
    if k("rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": float(k("rope.scaling.factor"))}
    if a.llama3_rope:
        f, lo, hi, orig = [float(x) for x in a.llama3_rope.split(",")]
        scaling = {"rope_type": "llama3", "factor": f, "low_freq_factor": lo,
                   "high_freq_factor": hi, "original_max_position_embeddings": int(orig)}
        want = llama3_inv_freq_factors(head_dim, base, f, lo, hi, orig)
        got = tensors.get("rope_freqs.weight")
        if got is None or np.max(np.abs(got - want) / want) > 1e-6:
            sys.exit("gguf_to_hf: rope_freqs.weight does not match the llama3 parameters given")
    elif "rope_freqs.weight" in tensors:
        sys.exit("gguf_to_hf: the file has rope_freqs.weight: give --llama3-rope")
    rope = {"rope_type": "default", "rope_theta": base}
    if scaling:
        rope.update(scaling)

    if arch in ("llama", "smollm3"):
        from transformers import LlamaConfig, SmolLM3Config
        if arch == "llama":
            cfg = LlamaConfig(**common, rope_parameters=rope, attention_bias=has_bias, mlp_bias=False)
        else:
            cfg = SmolLM3Config(**common, rope_parameters=rope, attention_bias=False,
                                no_rope_layer_interval=4, use_sliding_window=False)
        permute = True
    elif arch == "qwen2":
        from transformers import Qwen2Config
        cfg = Qwen2Config(**common, rope_parameters=rope, use_sliding_window=False)
        permute = False
    elif arch == "qwen3":
        from transformers import Qwen3Config
        cfg = Qwen3Config(**common, rope_parameters=rope, attention_bias=False, use_sliding_window=False)
        permute = False
    elif arch == "phi3":
        from transformers import Phi3Config
        rope_dim = k("rope.dimension_count", head_dim)
        rope_p = dict(rope, partial_rotary_factor=rope_dim / head_dim)
        if "rope_factors_long.weight" in tensors:
            orig = k("rope.scaling.original_context_length", k("context_length"))
            chosen = tensors["rope_factors_long.weight" if k("context_length") > orig
                             else "rope_factors_short.weight"].tolist()
            rope_p.update(rope_type="longrope", long_factor=chosen, short_factor=chosen,
                          original_max_position_embeddings=orig,
                          attention_factor=float(k("rope.scaling.attn_factor", 1.0)))
        cfg = Phi3Config(**common, rope_parameters=rope_p, sliding_window=None,
                         original_max_position_embeddings=rope_p.get("original_max_position_embeddings", k("context_length")))
        permute = False
    elif arch == "lfm2":
        from transformers import Lfm2Config
        common.pop("rms_norm_eps")
        cfg = Lfm2Config(**common, norm_eps=eps, rope_parameters=rope, conv_bias=False,
                         conv_L_cache=k("shortconv.l_cache"), block_auto_adjust_ff_dim=False,
                         layer_types=["conv" if x == 0 else "full_attention" for x in kv_per_layer])
        permute = False
    elif arch == "gemma3":
        from transformers import Gemma3TextConfig
        window = k("attention.sliding_window")
        pattern = k("attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):
            sliding = [bool(x) for x in pattern]
        else:
            sliding = [pattern == 0 or il % pattern < pattern - 1 for il in range(n_layer)]
        if not window:
            sliding = [False] * n_layer
        local = {"rope_type": "default", "rope_theta": float(k("rope.freq_base_swa", 10000.0))}
        qpas = (n_embd // n_head) if n_layer == 62 else head_dim
        cfg = Gemma3TextConfig(
            **common, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=qpas,
            sliding_window=window or 4096,
            layer_types=["sliding_attention" if s else "full_attention" for s in sliding],
            rope_parameters={"full_attention": rope, "sliding_attention": local},
            final_logit_softcapping=k("final_logit_softcapping"), attn_logit_softcapping=None)
        permute = False
    else:
        sys.exit(f"gguf_to_hf: architecture {arch!r} is not mapped")

    gemma = arch == "gemma3"
    sd = {"model.embed_tokens.weight": tensors["token_embd.weight"]}
    if arch == "lfm2":
        sd["model.embedding_norm.weight"] = tensors["token_embd_norm.weight"]
    else:
        sd["model.norm.weight"] = tensors["output_norm.weight"] - (1.0 if gemma else 0.0)
    if not tied:
        sd["lm_head.weight"] = tensors["output.weight"]
    norms = {"attn_norm": "input_layernorm",
             "ffn_norm": "pre_feedforward_layernorm" if gemma else "post_attention_layernorm",
             "post_attention_norm": "post_attention_layernorm",
             "post_ffw_norm": "post_feedforward_layernorm",
             "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
    mats = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}
    if arch == "phi3":
        mats = {"attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
                "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj"}
    if arch == "lfm2":
        norms = {"attn_norm": "operator_norm", "ffn_norm": "ffn_norm",
                 "attn_q_norm": "self_attn.q_layernorm", "attn_k_norm": "self_attn.k_layernorm"}
        mats = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.out_proj", "ffn_gate": "feed_forward.w1",
                "ffn_up": "feed_forward.w3", "ffn_down": "feed_forward.w2",
                "shortconv.in_proj": "conv.in_proj", "shortconv.out_proj": "conv.out_proj"}
    for l in range(n_layer):
        p = f"model.layers.{l}."
        for g, h in norms.items():
            t = tensors.get(f"blk.{l}.{g}.weight")
            if t is not None:
                sd[p + h + ".weight"] = t - (1.0 if gemma else 0.0)
        if f"blk.{l}.shortconv.conv.weight" in tensors:
            sd[p + "conv.conv.weight"] = tensors[f"blk.{l}.shortconv.conv.weight"][:, None, :]
        for g, h in mats.items():
            if f"blk.{l}.{g}.weight" not in tensors and arch == "lfm2":
                continue
            w = tensors[f"blk.{l}.{g}.weight"]
            b = tensors.get(f"blk.{l}.{g}.bias")
            if permute and g in ("attn_q", "attn_k"):
                heads = n_head if g == "attn_q" else n_kv
                w = unpermute(w, heads)
                if b is not None:
                    b = unpermute(b, heads)
            sd[p + h + ".weight"] = w
            if b is not None:
                sd[p + h + ".bias"] = b
    os.makedirs(a.out, exist_ok=True)
    cfg.architectures = [{"gemma3": "Gemma3ForCausalLM", "llama": "LlamaForCausalLM",
                          "smollm3": "SmolLM3ForCausalLM", "qwen2": "Qwen2ForCausalLM",
                          "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM",
                          "lfm2": "Lfm2ForCausalLM"}[arch]]
    cfg.save_pretrained(a.out)
    save_file({n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in sd.items()},
              os.path.join(a.out, "model.safetensors"))
    # Load it back: every tensor must be used, none missing.
    from transformers import AutoModelForCausalLM
    m, info = AutoModelForCausalLM.from_pretrained(a.out, dtype=torch.float32, output_loading_info=True)
    bad = {kk: v for kk, v in info.items() if v and kk != "mismatched_keys" or (kk == "mismatched_keys" and v)}
    bad.pop("error_msgs", None)
    missing = [x for x in info.get("missing_keys", []) if not (tied and x == "lm_head.weight")]
    if missing or info.get("unexpected_keys") or info.get("mismatched_keys"):
        sys.exit(f"gguf_to_hf: loading back: {info}")
    print(json.dumps({"out": a.out, "arch": arch, "tensors": len(sd), "model": type(m).__name__}))


if __name__ == "__main__":
    main()
