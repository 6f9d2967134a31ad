#!/usr/bin/env python3
"""Independent reference for LoRA fine-tuning, built on Hugging Face transformers + PEFT.

It loads a GGUF base model the way transformers does (dequantized to fp32, Q/K rows
un-permuted into Hugging Face order), wraps it with a PEFT LoRA adapter, and reports
losses, gradients and trained adapters that a native engine must reproduce.

Setup (once, in a virtual environment; several GB):
    python3 -m venv .venv-oracle && .venv-oracle/bin/pip install torch transformers peft safetensors gguf numpy
    (keep the venv out of the repository: add it to .gitignore)

This copy (tools/oracle/) extends shared/oracle/peft_reference.py: --model also takes a
Hugging Face model directory (config.json + model.safetensors), loaded with
from_pretrained(DIR) — tools/oracle/gguf_to_hf.py writes one from a GGUF with every setting
explicit, for the synthetic models whose features transformers' GGUF loader drops.

Commands (all write JSON to stdout):
    loss     --model M.gguf [--adapter DIR] --data D.jsonl
             mean cross-entropy per record and over all records
    grads    --model M.gguf --adapter DIR --data D.jsonl --out G.safetensors
             loss of the whole batch and d(loss)/d(lora_A, lora_B), PEFT tensor names
    train    --model M.gguf --adapter DIR --data D.jsonl --steps N --lr 1e-3
             [--batch 1] [--beta1 0.9 --beta2 0.999 --eps 1e-8 --weight-decay 0.0]
             [--clip 0] --out OUTDIR
             AdamW on the adapter only, records taken in file order, batch after batch,
             wrapping around; writes OUTDIR/adapter_model.safetensors + adapter_config.json
    init     --model M.gguf --r 4 --alpha 8 --targets q_proj,v_proj [--seed 0]
             [--nonzero-b] --out OUTDIR
             a PEFT adapter directory (B = 0 as in the LoRA paper unless --nonzero-b)
    generate --model M.gguf [--adapter DIR] --prompt-ids 1,2,3 [-n 40]
             greedy continuation (argmax at every step), the whole sequence as ids, and
             the top-2 logit margin of every generated step

Data: JSON lines {"ids": [1, 5, 9, ...], "mask": [0, 0, 1, ...]} where mask[i] = 1 means
token i is a training target (it is predicted from tokens < i); "mask" may be omitted
(every token but the first is a target). The loss of a batch is the mean over all
target tokens in the batch (Hugging Face's convention).

Tensor naming follows PEFT: base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight
with lora_A of shape [r, in_features] and lora_B of shape [out_features, r], in Hugging
Face row order. A GGUF llama model stores attn_q/attn_k rows permuted for llama.cpp's
RoPE; an engine that works in GGUF order must permute lora_B rows of q and k (and
lora_A is unaffected) when it reads or writes PEFT files.
"""
import argparse, json, os, sys

def load_model(path):
    import torch
    from transformers import AutoModelForCausalLM
    if os.path.isdir(path):
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="eager")
    else:
        d, f = os.path.split(os.path.abspath(path))
        m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    m.eval()
    return m

def read_data(path):
    recs = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            ids = r["ids"]
            mask = r.get("mask") or [0] + [1] * (len(ids) - 1)
            recs.append((ids, mask))
    return recs

def batch_tensors(recs):
    import torch
    n = max(len(ids) for ids, _ in recs)
    inp = torch.zeros(len(recs), n, dtype=torch.long)
    lab = torch.full((len(recs), n), -100, dtype=torch.long)
    att = torch.zeros(len(recs), n, dtype=torch.long)
    for b, (ids, mask) in enumerate(recs):
        inp[b, :len(ids)] = torch.tensor(ids)
        att[b, :len(ids)] = 1
        for i, (t, m) in enumerate(zip(ids, mask)):
            if m:
                lab[b, i] = t
    return inp, lab, att

def batch_loss(model, recs):
    import torch
    inp, lab, att = batch_tensors(recs)
    logits = model(input_ids=inp, attention_mask=att).logits
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    tg = lab[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(lg, tg, ignore_index=-100, reduction="mean")

def with_adapter(model, adapter_dir):
    from peft import PeftModel
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)

def cmd_loss(a):
    import torch
    model = load_model(a.model)
    if a.adapter:
        model = with_adapter(model, a.adapter)
    model.eval()  # PEFT leaves trainable adapters in training mode: no dropout in a loss reading
    recs = read_data(a.data)
    with torch.no_grad():
        per = [float(batch_loss(model, [r])) for r in recs]
        total = float(batch_loss(model, recs))
    print(json.dumps({"per_record": per, "batch_mean": total}))

def lora_params(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}

def peft_name(n):
    # PeftModel parameter names carry the adapter name; saved files do not.
    return n.replace(".default", "")

def cmd_grads(a):
    from safetensors.torch import save_file
    model = with_adapter(load_model(a.model), a.adapter)
    model.eval()  # gradients without dropout, so they are reproducible
    recs = read_data(a.data)
    loss = batch_loss(model, recs)
    loss.backward()
    g = {peft_name(n): p.grad.detach().contiguous() for n, p in lora_params(model).items()}
    save_file(g, a.out)
    print(json.dumps({"loss": float(loss), "tensors": len(g)}))

def cmd_train(a):
    import torch
    model = with_adapter(load_model(a.model), a.adapter)
    recs = read_data(a.data)
    params = list(lora_params(model).values())
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps,
                            weight_decay=a.weight_decay)
    losses, k = [], 0
    for _ in range(a.steps):
        batch = [recs[(k + j) % len(recs)] for j in range(a.batch)]
        k = (k + a.batch) % len(recs)
        opt.zero_grad()
        loss = batch_loss(model, batch)
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.clip)
        opt.step()
        losses.append(float(loss))
    model.save_pretrained(a.out)
    print(json.dumps({"losses": losses}))

def cmd_init(a):
    import torch
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(a.seed)
    model = load_model(a.model)
    cfg = LoraConfig(r=a.r, lora_alpha=a.alpha, target_modules=a.targets.split(","),
                     lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    if a.nonzero_b:
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0.0, 0.02)
    pm.save_pretrained(a.out)
    print(json.dumps({"out": a.out}))

def cmd_generate(a):
    import torch
    model = load_model(a.model)
    if a.adapter:
        model = with_adapter(model, a.adapter)
        model.eval()
    ids = [int(x) for x in a.prompt_ids.split(",")]
    margins = []
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        for step in range(a.n):
            lg = out.logits[0, -1]
            top = torch.topk(lg, 2)
            margins.append(float(top.values[0] - top.values[1]))
            ids.append(int(top.indices[0]))
            if step + 1 < a.n:
                out = model(torch.tensor([ids[-1:]]), past_key_values=out.past_key_values,
                            use_cache=True)
    # margins[i]: the top-2 logit gap at generated step i (a step whose gap is within
    # rounding may legitimately differ between implementations).
    print(json.dumps({"ids": ids, "margins": margins}))

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("loss"); p.add_argument("--model", required=True); p.add_argument("--adapter"); p.add_argument("--data", required=True)
    p = sp.add_parser("grads"); p.add_argument("--model", required=True); p.add_argument("--adapter", required=True); p.add_argument("--data", required=True); p.add_argument("--out", required=True)
    p = sp.add_parser("train")
    for k in ("--model", "--adapter", "--data", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--steps", type=int, default=10); p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=1); p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999); p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.0); p.add_argument("--clip", type=float, default=0.0)
    p = sp.add_parser("init"); p.add_argument("--model", required=True); p.add_argument("--r", type=int, default=4)
    p.add_argument("--alpha", type=float, default=8); p.add_argument("--targets", default="q_proj,v_proj")
    p.add_argument("--seed", type=int, default=0); p.add_argument("--nonzero-b", action="store_true"); p.add_argument("--out", required=True)
    p = sp.add_parser("generate"); p.add_argument("--model", required=True); p.add_argument("--adapter")
    p.add_argument("--prompt-ids", default="1"); p.add_argument("-n", type=int, default=40)
    a = ap.parse_args()
    {"loss": cmd_loss, "grads": cmd_grads, "train": cmd_train, "init": cmd_init,
     "generate": cmd_generate}[a.cmd](a)

if __name__ == "__main__":
    main()
