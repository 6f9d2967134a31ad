#!/usr/bin/env bash
# Oracle goldens for LoRA training (tests/oracle_train.rs), made once with Hugging Face
# transformers + PEFT (tools/oracle/peft_reference.py, a superset of
# shared/oracle/peft_reference.py) in a venv outside the repository.
#   usage: tests/golden/oracle/make_train_goldens.sh PYTHON ORACLE_DIR SYNTH_DIR [MODELS...]
# MODELS (default: all) picks which goldens to remake. gemma3, qwen3 and smollm3 are loaded
# as explicit Hugging Face models (tools/oracle/gguf_to_hf.py writes SYNTH_DIR/hf-<name>):
# transformers' GGUF loader drops the features they test.
# SYNTH_DIR holds the synthetic models written by
#   POCKETLORA_SYNTH_OUT=SYNTH_DIR cargo test --release --test it -- --ignored write_synthetic_fixtures
set -euo pipefail
PY=$1; ORACLE=$2/peft_reference.py; SYNTH=$3
cd "$(dirname "$0")"
out=train
mkdir -p $out
run() { # name model data [targets]
    local name=$1 model=$2 data=$3 targets=${4:-q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj}
    rm -rf $out/$name && mkdir -p $out/$name
    $PY $ORACLE init --model $model --r 4 --alpha 8 --targets $targets \
        --seed 0 --nonzero-b --out $out/$name/init > /dev/null
    $PY $ORACLE loss --model $model --adapter $out/$name/init --data $data > $out/$name/loss.json
    $PY $ORACLE grads --model $model --adapter $out/$name/init --data $data --out $out/$name/grads.safetensors > $out/$name/grads.json
    $PY $ORACLE train --model $model --adapter $out/$name/init --data $data --steps 10 --batch 2 --lr 1e-2 \
        --clip 1.0 --weight-decay 0.01 --out $out/$name/trained > $out/$name/train.json
    rm -f $out/$name/trained/README.md $out/$name/init/README.md
}
shift 3
want() { [ $# -eq 0 ] || [[ " $* " == *" $M "* ]]; }
for M in stories260K-f32 stories260K-q8_0 stories260K-q4_0; do
    want "$@" && run $M ../../../assets/$M.gguf eval_records.jsonl
done
for M in synth-llama-untied synth-qwen2 synth-llama-kquants; do
    want "$@" && run $M $SYNTH/$M.gguf $M.records.jsonl
done
for M in synth-gemma3 synth-qwen3 synth-smollm3 synth-llama3 synth-phi synth-lfm2; do
    if want "$@"; then
        extra=""; [ $M = synth-llama3 ] && extra="--llama3-rope 8,1,4,64"
        targets=""; [ $M = synth-phi ] && targets=qkv_proj,o_proj,gate_up_proj,down_proj
        [ $M = synth-lfm2 ] && targets=q_proj,k_proj,v_proj,out_proj,in_proj,w1,w2,w3
        $PY "$(dirname "$ORACLE")/gguf_to_hf.py" $SYNTH/$M.gguf $SYNTH/hf-$M $extra > /dev/null
        run $M $SYNTH/hf-$M $M.records.jsonl $targets
    fi
done
