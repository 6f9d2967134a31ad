import sys, os, torch
from transformers import AutoModelForCausalLM
p, out = sys.argv[1], sys.argv[2]
d, f = os.path.split(os.path.abspath(p))
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
m.config.save_pretrained(out)
print(m.config)
import json
c = json.load(open(os.path.join(out, "config.json")))
c["architectures"] = ["LlamaForCausalLM" if c["model_type"] == "llama" else "Qwen2ForCausalLM"]
c.pop("quantization_config", None)
json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=2)
