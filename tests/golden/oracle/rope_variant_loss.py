#!/usr/bin/env python3
"""Oracle losses for llama GGUFs with RoPE scaling that transformers' GGUF loader ignores.

transformers reads neither `llama.rope.scaling.*` nor a `rope_freqs.weight` tensor from a
GGUF, so this script loads the model with shared/oracle/peft_reference.py and divides the
rotary embedding's inverse frequencies itself, the way those settings define it:
  --linear F : every frequency / F   (linear scaling: positions / F)
  --freqs    : frequency of pair i / rope_freqs[i]   (Llama 3.1 style factors)
Then it prints the same JSON as `peft_reference.py loss`.

    .venv-oracle/bin/python tests/golden/oracle/rope_variant_loss.py MODEL.gguf DATA.jsonl [--linear F | --freqs]
"""
import argparse, json, os, sys

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("data")
ap.add_argument("--linear", type=float); ap.add_argument("--freqs", action="store_true")
ap.add_argument("--oracle", default=os.path.join(os.path.dirname(__file__), "../../../../shared/oracle"))
a = ap.parse_args()
sys.path.insert(0, a.oracle)
import torch, numpy as np, gguf
import peft_reference as pr

m = pr.load_model(a.model)
rot = m.model.rotary_emb
inv = rot.inv_freq.clone()
if a.linear:
    inv = inv / a.linear
if a.freqs:
    t = next(t for t in gguf.GGUFReader(a.model).tensors if t.name == "rope_freqs.weight")
    inv = inv / torch.tensor(np.array(t.data, dtype=np.float32))
rot.inv_freq = inv
rot.original_inv_freq = inv
recs = pr.read_data(a.data)
with torch.no_grad():
    per = [float(pr.batch_loss(m, [r])) for r in recs]
    total = float(pr.batch_loss(m, recs))
print(json.dumps({"per_record": per, "batch_mean": total}))
