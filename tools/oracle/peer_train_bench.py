"""Peer baseline: PyTorch + PEFT LoRA training throughput and peak memory on a GGUF model.

Usage: python peer_train_bench.py MODEL.gguf [seq=512] [steps=4] [rank=8] [threads=2] [ckpt=0]
Prints JSON: tokens/s over the timed steps (after one warm-up step) and peak RSS.

A copy of shared/oracle/peer_train_bench.py whose LoRA targets are every linear layer of
the architecture by its Hugging Face names (TARGETS, by config.model_type), so that the
peer adapts what `pocketlora bench` adapts on every architecture.
"""
import json, os, resource, sys, time
import torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

path = sys.argv[1]
seq = int(sys.argv[2]) if len(sys.argv) > 2 else 512
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 4
rank = int(sys.argv[4]) if len(sys.argv) > 4 else 8
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2
ckpt = int(sys.argv[6]) if len(sys.argv) > 6 else 0
torch.set_num_threads(threads)
d, f = os.path.split(os.path.abspath(path))
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
if ckpt:
    m.gradient_checkpointing_enable()
    m.enable_input_require_grads()
# Every linear layer of a block, per architecture (Hugging Face module names).
LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "lfm2": ["q_proj", "k_proj", "v_proj", "out_proj", "in_proj", "w1", "w2", "w3"],
}
targets = TARGETS.get(m.config.model_type, LLAMA_LIKE)
cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0,
                 bias="none", task_type="CAUSAL_LM")
pm = get_peft_model(m, cfg)
pm.train()  # checkpointing only acts in training mode; dropout is 0, so the loss is unchanged
opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
g = torch.Generator().manual_seed(0)
V = m.config.vocab_size
def step():
    ids = torch.randint(0, V, (1, seq), generator=g)
    out = pm(input_ids=ids, labels=ids)
    out.loss.backward()
    opt.step(); opt.zero_grad()
    return float(out.loss)
step()
t = time.time()
for _ in range(steps):
    step()
dt = time.time() - t
print(json.dumps({"model": f, "model_type": m.config.model_type, "targets": targets, "seq": seq, "rank": rank, "threads": threads, "grad_ckpt": bool(ckpt),
                  "tokens_per_s": steps * seq / dt,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
