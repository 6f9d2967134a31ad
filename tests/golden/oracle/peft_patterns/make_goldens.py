#!/usr/bin/env python3
"""PEFT-made adapters with rank_pattern / alpha_pattern / layers_to_transform / use_rslora, and
Hugging Face PEFT's losses with them (tests/peft_patterns.rs compares ours within 1e-4).

    usage: make_goldens.py PYTHON_ORACLE_DIR make          # PEFT adapters + PEFT's losses
           make_goldens.py PYTHON_ORACLE_DIR loss NAME...  # PEFT's loss on NAME/ (adapters we saved)

Run from this directory with the oracle venv (torch, transformers, peft); PYTHON_ORACLE_DIR
holds shared/oracle/peft_reference.py. Records: ../eval_records.jsonl. See README.md.
"""
import importlib.util, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "../../../../assets")
RECORDS = os.path.join(HERE, "../eval_records.jsonl")
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name: (base model, LoraConfig arguments, seed)
CASES = {
    # Every target; per-module ranks (plain name, layer-specific name, a regular expression)
    # and alphas; llama q/k rows permuted in the GGUF.
    "patterns": ("stories260K-q8_0.gguf", dict(
        r=4, lora_alpha=8, target_modules=ALL,
        rank_pattern={"q_proj": 8, "layers.1.mlp.down_proj": 2, r"layers\.[34]\.self_attn\.v_proj": 6},
        alpha_pattern={"k_proj": 3.0, "model.layers.2.mlp.up_proj": 20.0, "o_proj": 12.0}), 1),
    # rsLoRA on a subset of targets and blocks, with patterns.
    "rslora-subset": ("aidreams260K-q4_0.gguf", dict(
        r=8, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj", "up_proj"],
        layers_to_transform=[0, 2], rank_pattern={"v_proj": 4}, alpha_pattern={"up_proj": 6.0}), 2),
    # Plain LoRA on a subset (no patterns): what llama.cpp's converter handles as is.
    "plain-subset": ("stories260K-f32.gguf", dict(
        r=2, lora_alpha=16, target_modules=["k_proj", "o_proj", "down_proj"],
        layers_to_transform=[1, 3]), 3),
}


def oracle(dir_):
    spec = importlib.util.spec_from_file_location("peft_reference", os.path.join(dir_, "peft_reference.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def loss(ref, model_file, adapter_dir):
    import torch
    model = ref.with_adapter(ref.load_model(os.path.join(ASSETS, model_file)), adapter_dir)
    model.eval()
    recs = ref.read_data(RECORDS)
    with torch.no_grad():
        per = [float(ref.batch_loss(model, [r])) for r in recs]
        total = float(ref.batch_loss(model, recs))
    return {"per_record": per, "batch_mean": total}


def make(ref):
    import torch
    from peft import LoraConfig, get_peft_model
    for name, (model_file, kw, seed) in CASES.items():
        torch.manual_seed(seed)
        cfg = LoraConfig(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", **kw)
        pm = get_peft_model(ref.load_model(os.path.join(ASSETS, model_file)), cfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0.0, 0.05)
        out = os.path.join(HERE, name)
        pm.save_pretrained(out)
        for extra in ("README.md",):
            if os.path.exists(os.path.join(out, extra)):
                os.remove(os.path.join(out, extra))
        with open(os.path.join(HERE, name + ".peft_loss.json"), "w") as f:
            json.dump(loss(ref, model_file, out), f)
            f.write("\n")


def main():
    ref = oracle(sys.argv[1])
    if sys.argv[2] == "make":
        make(ref)
    elif sys.argv[2] == "loss":
        for name in sys.argv[3:]:
            case = name.split(".")[0]
            with open(os.path.join(HERE, name + ".peft_loss.json"), "w") as f:
                json.dump(loss(ref, CASES[case][0], os.path.join(HERE, name)), f)
                f.write("\n")


if __name__ == "__main__":
    main()
