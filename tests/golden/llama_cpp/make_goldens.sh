#!/usr/bin/env bash
# llama.cpp references for our GGUF adapter export (tests/llama_cpp_adapter.rs); see README.md.
#   usage: make_goldens.sh LLAMA_CPP_DIR PYTHON POCKETLORA SYNTH_DIR
# LLAMA_CPP_DIR: a llama.cpp checkout built with cmake (build/bin/libllama.so);
# PYTHON: the oracle venv (torch, transformers, peft); POCKETLORA: target/release/pocketlora;
# SYNTH_DIR: the synthetic models, written by
#   POCKETLORA_SYNTH_OUT=SYNTH_DIR cargo test --release --test it -- --ignored write_synthetic_fixtures
set -euo pipefail
LCPP=$1; PY=$2; PL=$3; SYNTH=$4
cd "$(dirname "$0")"
ROOT=../../..; G=../oracle; A=$ROOT/assets
TMP=$(mktemp -d)
if [ -f $LCPP/build/bin/libllama.so ]; then
    gcc -O2 -o $TMP/lora_logits lora_logits.c -I$LCPP/include -I$LCPP/ggml/include \
        -L$LCPP/build/bin -lllama -lggml -lggml-base -Wl,-rpath,$LCPP/build/bin
else # a static build (BUILD_SHARED_LIBS=OFF)
    gcc -O2 -c lora_logits.c -o $TMP/lora_logits.o -I$LCPP/include -I$LCPP/ggml/include
    g++ $TMP/lora_logits.o -o $TMP/lora_logits $LCPP/build/src/libllama.a $LCPP/build/ggml/src/libggml.a \
        $LCPP/build/ggml/src/libggml-cpu.a $LCPP/build/ggml/src/libggml-base.a -fopenmp -lpthread -lm
fi
# Our exports (the test re-exports and checks the FNV-1a 64 recorded next to the logits).
$PL export --model $A/stories260K-f32.gguf --adapter $G/train/stories260K-f32/trained --out $TMP/trained-f32.gguf --name Trained
$PL export --model $A/stories260K-f32.gguf --adapter $G/train/stories260K-f32/trained --out $TMP/trained-f16.gguf --name Trained --dtype f16
$PL export --model $A/stories260K-f32.gguf --adapter $G/peft_patterns/patterns --out $TMP/patterns.gguf --name patterns
$PL export --model $A/stories260K-f32.gguf --adapter $G/peft_patterns/plain-subset --out $TMP/plain-subset.gguf --name plain-subset
$PL export --model $A/aidreams260K-f32.gguf --adapter $G/peft_patterns/rslora-subset --out $TMP/rslora-subset.gguf --name rslora-subset
$PL export --model $A/stories260K-q8_0.gguf --adapter $G/train/stories260K-q8_0/trained --out $TMP/trained-q8.gguf --name Trained
$PL export --model $SYNTH/synth-qwen2.gguf --adapter $G/train/synth-qwen2/trained --out $TMP/qwen2-trained.gguf --name Trained
# Merged models (adapter folded into the weights), run by llama.cpp without an adapter.
$PL merge --model $A/stories260K-f32.gguf --adapter $G/train/stories260K-f32/trained --out $TMP/merged-f32.gguf > /dev/null
$PL merge --model $A/stories260K-q8_0.gguf --adapter $G/train/stories260K-q8_0/trained --out $TMP/merged-q8_0.gguf > /dev/null
IDS=1,461,461,401,401,401,461,378
fnv() { $PY -c "
import sys; h=0xcbf29ce484222325
for b in open(sys.argv[1],'rb').read(): h=((h^b)*0x100000001b3)&0xffffffffffffffff
print(h)" $1; }
logits() { # out model adapters [ids]
    local out=$1 model=$2 ads=$3 hashes=""
    if [ "$ads" != - ]; then
        for x in ${ads//,/ }; do hashes="$hashes $(fnv ${x%%:*})"; done
    fi
    local path=$A/$model; [ -f $path ] || path=$SYNTH/$model; [ -f $path ] || path=$TMP/$model
    $TMP/lora_logits $path "$ads" ${4:-$IDS} | $PY -c "
import json, sys; d = json.load(sys.stdin)
d['model'] = sys.argv[1]; d['model_fnv1a64'] = int(sys.argv[5]); d['adapters'] = sys.argv[2]; d['adapter_fnv1a64'] = [int(h) for h in sys.argv[3].split()]
json.dump(d, open(sys.argv[4], 'w')); open(sys.argv[4], 'a').write('\n')" $model "${ads//$TMP\//}" "$hashes" $out $(fnv $path)
}
logits logits_stories260K-f32_base.json stories260K-f32.gguf -
logits logits_stories260K-f32_trained-f32.json stories260K-f32.gguf $TMP/trained-f32.gguf
logits logits_stories260K-f32_trained-f16.json stories260K-f32.gguf $TMP/trained-f16.gguf
logits logits_stories260K-f32_patterns.json stories260K-f32.gguf $TMP/patterns.gguf
logits logits_stories260K-f32_mix.json stories260K-f32.gguf $TMP/trained-f32.gguf:1,$TMP/plain-subset.gguf:0.5
logits logits_aidreams260K-f32_rslora-subset.json aidreams260K-f32.gguf $TMP/rslora-subset.gguf
logits logits_merged-f32_stories260K-f32_trained.json merged-f32.gguf -
logits logits_merged-q8_0_stories260K-q8_0_trained.json merged-q8_0.gguf -
logits logits_stories260K-q8_0_base.json stories260K-q8_0.gguf -
logits logits_stories260K-q8_0_trained.json stories260K-q8_0.gguf $TMP/trained-q8.gguf
logits logits_synth-qwen2_trained.json synth-qwen2.gguf $TMP/qwen2-trained.gguf 1,5,9,20,33,41,7,60
# The newer architectures (F32 variants; the PEFT-trained adapters of their oracle goldens).
# (Made with llama.cpp from the llama-cpp-python 0.3.36 sdist, static build.)
ARCH_IDS=1,5,9,20,33,41,7,60,12,3,77,25,50,18,64,2,44,31,8,70,15,66,29,40
for m in gemma3 qwen3 smollm3 phi3 lfm2; do
    base=synth-$m-f32; [ $m = smollm3 ] && base=synth-smollm3; [ $m = phi3 ] && base=synth-phi-f32
    $PL export --model $SYNTH/$base.gguf --adapter $G/train/synth-${m/phi3/phi}/trained --out $TMP/$m-trained.gguf --name Trained
    $PL merge --model $SYNTH/$base.gguf --adapter $G/train/synth-${m/phi3/phi}/trained --out $TMP/$m-merged.gguf > /dev/null
    logits logits_${base}_base.json $base.gguf - $ARCH_IDS
    logits logits_${base}_trained.json $base.gguf $TMP/$m-trained.gguf $ARCH_IDS
    logits logits_${base}_merged.json $m-merged.gguf - $ARCH_IDS
done
# llama.cpp's converter on the same PEFT adapters (F32: it writes LoRA tensors as F32 whatever --outtype).
export PYTHONPATH=$TMP/stubs
S=$TMP/stubs/mistral_common/tokens/tokenizers; mkdir -p $S
touch $TMP/stubs/mistral_common/__init__.py $TMP/stubs/mistral_common/tokens/__init__.py $S/__init__.py
echo "TokenizerVersion = None" > $S/base.py; echo "DATASET_MEAN = DATASET_STD = None" > $S/multimodal.py
echo "Tekkenizer = None" > $S/tekken.py; echo "SentencePieceTokenizer = None" > $S/sentencepiece.py
$PY hf_config.py $A/stories260K-f32.gguf $TMP/hf-stories > /dev/null 2>&1
$PY hf_config.py $A/aidreams260K-f32.gguf $TMP/hf-aidreams > /dev/null 2>&1
$PY hf_config.py $SYNTH/synth-qwen2.gguf $TMP/hf-qwen2 > /dev/null 2>&1
conv() { $PY $LCPP/convert_lora_to_gguf.py --base $1 --outtype f32 --outfile $3 $2 > /dev/null 2>&1; }
conv $TMP/hf-stories $G/train/stories260K-f32/trained converter_stories260K-f32_trained.gguf
conv $TMP/hf-stories $G/peft_patterns/plain-subset converter_plain-subset.gguf
conv $TMP/hf-aidreams $G/peft_patterns/rslora-subset converter_rslora-subset.gguf
conv $TMP/hf-qwen2 $G/train/synth-qwen2/trained converter_synth-qwen2_trained.gguf
rm -rf $TMP
