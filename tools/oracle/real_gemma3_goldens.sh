#!/usr/bin/env bash
# Goldens of the real Gemma 3 270M (tests/it/real_models.rs), made once outside CI:
#   tools/oracle/real_gemma3_goldens.sh PYTHON LLAMA_CPP_BIN MODEL.gguf
# PYTHON: a venv with torch, transformers, peft, gguf (tools/oracle/peft_reference.py);
# LLAMA_CPP_BIN: llama.cpp's build/bin (llama-tokenize, llama-completion), built from the
# source vendored in the llama-cpp-python sdist. Writes tests/golden/real/:
#   gemma3_records.jsonl  the texts of gemma3_texts.jsonl as ids, by llama.cpp's tokenizer
#                         (BOS first); the last is longer than the 512-token window
#   gemma3_loss.json      transformers' (gguf_file=) per-record loss on them
#   gemma3_gen.json       per prompt: transformers' greedy ids + top-2 margins over 32
#                         tokens, and llama.cpp's greedy text (F32 KV cache, flash attention
#                         off, one thread, no warm-up)
set -euo pipefail
PY=$1; LB=$2; M=$3
cd "$(dirname "$0")/../../tests/golden/real"
ORACLE=../../../tools/oracle/peft_reference.py
"$PY" - "$LB" "$M" <<'PYEOF'
import json, subprocess, sys
lb, m = sys.argv[1], sys.argv[2]
def tok(text):
    open("/tmp/gemma3-text.txt", "w").write(text)
    r = subprocess.run([f"{lb}/llama-tokenize", "-m", m, "-f", "/tmp/gemma3-text.txt", "--ids",
                        "--log-disable"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)
with open("gemma3_records.jsonl", "w") as out:
    for line in open("gemma3_texts.jsonl"):
        out.write(json.dumps({"ids": tok(json.loads(line)["text"])}) + "\n")
PYEOF
"$PY" $ORACLE loss --model "$M" --data gemma3_records.jsonl > gemma3_loss.json
"$PY" - "$PY" "$ORACLE" "$LB" "$M" <<'PYEOF'
import json, subprocess, sys
py, oracle, lb, m = sys.argv[1:5]
long_ids = [json.loads(l)["ids"] for l in open("gemma3_records.jsonl")][-1][:560]
prompts = [{"text": "The capital of France is"},
           {"text": "To make a cup of tea, boil fresh water"},
           {"ids": long_ids}]
for p in prompts:
    if "text" in p:
        open("/tmp/gemma3-text.txt", "w").write(p["text"])
        r = subprocess.run([f"{lb}/llama-tokenize", "-m", m, "-f", "/tmp/gemma3-text.txt", "--ids",
                            "--log-disable"], capture_output=True, text=True, check=True)
        p["ids"] = json.loads(r.stdout)
    hf = json.loads(subprocess.run([py, oracle, "generate", "--model", m, "--prompt-ids",
                                    ",".join(map(str, p["ids"])), "-n", "32"],
                                   capture_output=True, text=True, check=True).stdout)
    p["hf_ids"], p["hf_margins"] = hf["ids"][len(p["ids"]):], hf["margins"]
    # llama.cpp reads the prompt as text: detokenize it the way it will read it back.
    text = p.get("text")
    if text is not None:
        r = subprocess.run([f"{lb}/llama-completion", "-m", m, "-p", text, "-n", "32", "--temp", "0",
                            "-ctk", "f32", "-ctv", "f32", "-fa", "off", "-t", "1", "--no-warmup",
                            "--no-display-prompt", "-no-cnv", "--seed", "0"],
                           capture_output=True, text=True, check=True)
        p["llama_cpp_text"] = r.stdout
print(json.dumps(prompts), file=open("gemma3_gen.json", "w"))
PYEOF
echo "wrote $(pwd)/gemma3_{records.jsonl,loss.json,gen.json}"
# Tokenizer goldens of both real files: llama.cpp's ids (no BOS, special tokens not
# parsed) of llama.cpp's own tokenizer test strings (tests/data/vocab/ggml-vocab-llama-spm
# .gguf.inp) and a few more.
"$PY" - "$LB" "$M" "$(dirname "$M")/SmolLM2-135M-Instruct.Q4_1.gguf" <<'PYEOF'
import json, subprocess, sys
lb, models = sys.argv[1], sys.argv[2:]
texts = open("../../data/vocab/ggml-vocab-llama-spm.gguf.inp").read().split("\n__ggml_vocab_test__\n")[:-1]
texts += ["  leading spaces", "tabs\tand\nnewlines\n\n", "Grüße, 日本語, émoji 🚀", "<start_of_turn>user",
          "x = [1, 22, 333, 4444]"]
for m, out in zip(models, ["gemma3_tokenizer.json", "smollm2_tokenizer.json"]):
    rows = []
    for t in texts:
        r = subprocess.run([f"{lb}/llama-tokenize", "-m", m, "--stdin", "--ids", "--no-bos",
                            "--no-parse-special", "--log-disable"], input=t, capture_output=True,
                           text=True, check=True)
        rows.append([t, json.loads(r.stdout)])
    json.dump(rows, open(out, "w"), ensure_ascii=False)
PYEOF
# Adapter interop goldens (POCKETLORA: the pocketlora binary to use, default target/release):
#   gemma3_peft_qv/                PEFT's own r 2 q,v adapter (B non-zero), and
#   gemma3_ours_qv/                one trained here (20 steps on assets/demo/facts.jsonl);
#   *.peft_loss.json               PEFT's loss of each on gemma3_facts_records.jsonl;
#   gemma3_ours_qv.llama_cpp.json  llama.cpp's greedy text with ours exported (--lora) and
#                                  merged, and the FNV-1a of those two files.
P=${POCKETLORA:-../../../target/release/pocketlora}
"$PY" - "$LB" "$M" <<'PYEOF'
import json, subprocess, sys
lb, m = sys.argv[1:3]
with open("gemma3_facts_records.jsonl", "w") as out:
    for l in open("../../../assets/demo/facts.jsonl"):
        r = subprocess.run([f"{lb}/llama-tokenize", "-m", m, "--stdin", "--ids", "--log-disable"],
                           input=json.loads(l)["text"], capture_output=True, text=True, check=True)
        out.write(json.dumps({"ids": json.loads(r.stdout) + [1]}) + "\n")
PYEOF
rm -rf gemma3_peft_qv gemma3_ours_qv /tmp/gemma3-qv
"$PY" $ORACLE init --model "$M" --r 2 --alpha 4 --targets q_proj,v_proj --seed 1 --nonzero-b --out gemma3_peft_qv
rm -f gemma3_peft_qv/README.md
"$P" train --model "$M" --data ../../../assets/demo/facts.jsonl --out /tmp/gemma3-qv --rank 2 --alpha 4 \
    --targets q,v --lr 5e-3 --batch 6 --steps 20 --quiet
mkdir -p gemma3_ours_qv && cp /tmp/gemma3-qv/adapter_config.json /tmp/gemma3-qv/adapter_model.safetensors gemma3_ours_qv/
for a in gemma3_peft_qv gemma3_ours_qv; do
    "$PY" $ORACLE loss --model "$M" --adapter $a --data gemma3_facts_records.jsonl > $a.peft_loss.json
done
"$P" export --model "$M" --adapter gemma3_ours_qv --out /tmp/gemma3-qv.gguf
"$P" merge --model "$M" --adapter gemma3_ours_qv --out /tmp/gemma3-qv-merged.gguf
"$PY" - "$LB" "$M" <<'PYEOF'
import json, subprocess, sys
lb, m = sys.argv[1:3]
def fnv(path):
    h = 0xcbf29ce484222325
    for b in open(path, "rb").read():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return "%016x" % h
run = lambda *a: subprocess.run([f"{lb}/llama-completion", *a, "-n", "16", "--temp", "0", "-ctk", "f32",
    "-ctv", "f32", "-fa", "off", "-t", "1", "--no-warmup", "-no-cnv", "--no-display-prompt"],
    capture_output=True, text=True, check=True).stdout
runs = [{"prompt": p,
         "llama_cpp_with_adapter": run("-m", m, "--lora", "/tmp/gemma3-qv.gguf", "-p", p),
         "llama_cpp_merged": run("-m", "/tmp/gemma3-qv-merged.gguf", "-p", p)}
        for p in ["My sister Alice", "The spare key", "Our wifi password"]]
json.dump({"adapter_gguf_fnv1a64": fnv("/tmp/gemma3-qv.gguf"),
           "merged_gguf_fnv1a64": fnv("/tmp/gemma3-qv-merged.gguf"), "runs": runs},
          open("gemma3_ours_qv.llama_cpp.json", "w"), indent=1)
PYEOF
