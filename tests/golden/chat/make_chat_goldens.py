#!/usr/bin/env python3
"""Writes chat_goldens.json: reference renderings of one conversation by each chat family.

Usage (run once; the output is committed):
    /work/venv-oracle/bin/python make_chat_goldens.py path/to/llama.cpp/tests/test-chat-template.cpp \
        [path/to/llama.cpp/models/templates]

Two independent sources, neither of them this crate:
1. llama.cpp's tests/test-chat-template.cpp (MIT): for every test case whose template belongs
   to a family pocketlora renders (ChatML, Llama 3, Llama 2 / Mistral [INST], Phi-3, Gemma),
   the template text and llama.cpp's `expected_output` for its fixed conversation with
   add_generation_prompt = true. The C++ string literals are decoded here.
2. Hugging Face transformers `apply_chat_template` (tokenize=False) on the Zephyr template of
   HuggingFaceH4/zephyr-7b-beta (not among llama.cpp's cases), on the same conversation, with
   and without the generation prompt; and on the ChatML and Llama 3 templates without the
   system message (where Jinja and llama.cpp's renderer must agree).
3. With llama.cpp's models/templates (second argument): transformers `apply_chat_template`
   on Qwen3's template (Qwen-Qwen3-0.6B.jinja), on conversations with and without `<think>`
   reasoning in assistant turns, ending with a user turn (generation prompt) or an assistant
   turn (training data).
"""
import json
import re
import sys

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]

# llama.cpp test case name -> pocketlora template name expected from detection.
WANTED = {
    "teknium/OpenHermes-2.5-Mistral-7B": "chatml",
    "mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)": "llama2",
    "TheBloke/FusionNet_34Bx2_MoE-AWQ": "llama2-sys-bos",
    "bofenghuang/vigogne-2-70b-chat": "llama2-sys-strip",
    "google/gemma-7b-it": "gemma",
    "Llama-3": "llama3",
    "Phi-3-mini": "phi3",
    "Phi-3-small": "phi3",
    "Phi-3-medium": "phi3",
    "Phi-3-vision": "phi3",
    "mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1' template with a system prompt)": "mistral-v1",
    "Mistral-Large-Instruct-2407 (mistralai 'v3' template; modified to have system prompt at start)": "mistral-v3",
    "Mistral-Nemo-Instruct-2407 (mistralai 'v3-tekken' template; modified to have system prompt at start)": "mistral-v3-tekken",
    "mistralai/Mistral-Large-Instruct-2411 (mistralai 'v7' template)": "mistral-v7",
}

ZEPHYR = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"


def c_string(src, i):
    """Decodes adjacent C++ string literals starting at src[i] (after optional U8C( ))."""
    out = []
    while True:
        while src[i] in " \t\n":
            i += 1
        if src.startswith("U8C(", i):
            i += 4
            continue
        if src[i] != '"':
            break
        i += 1
        while src[i] != '"':
            c = src[i]
            if c == "\\":
                n = src[i + 1]
                out.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\r"}[n])
                i += 2
            else:
                out.append(c)
                i += 1
        i += 1
    return "".join(out), i


def llama_cpp_cases(path):
    src = open(path, encoding="utf-8").read()
    cases = []
    for m in re.finditer(r'/\* \.name= \*/', src):
        name, i = c_string(src, m.end())
        if name not in WANTED:
            continue
        j = src.index("/* .template_str= */", i) + len("/* .template_str= */")
        tmpl, i = c_string(src, j)
        j = src.index("/* .expected_output= */", i) + len("/* .expected_output= */")
        expected, i = c_string(src, j)
        cases.append({
            "name": name,
            "family": WANTED[name],
            "template": tmpl,
            "messages": CONVERSATION,
            "add_generation_prompt": True,
            "eos": "</s>",
            "expected": expected,
            "source": "llama.cpp tests/test-chat-template.cpp expected_output",
        })
    missing = set(WANTED) - {c["name"] for c in cases}
    assert not missing, missing
    return cases


def hf(template, messages, add_generation_prompt, bos="<s>", eos="</s>"):
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
        bos_token=bos, eos_token=eos, unk_token="<unk>")
    tok.chat_template = template
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def main():
    cases = llama_cpp_cases(sys.argv[1])
    for agp in (True, False):
        cases.append({
            "name": f"HuggingFaceH4/zephyr-7b-beta (add_generation_prompt={agp})",
            "family": "zephyr",
            "template": ZEPHYR,
            "messages": CONVERSATION,
            "add_generation_prompt": agp,
            "eos": "</s>",
            "expected": hf(ZEPHYR, CONVERSATION, agp),
            "source": "transformers apply_chat_template",
        })
    by_name = {c["name"]: c for c in cases}
    no_system = CONVERSATION[1:]
    for name in ("teknium/OpenHermes-2.5-Mistral-7B",):
        t = by_name[name]["template"]
        for agp in (True, False):
            cases.append({
                "name": f"{name} via transformers, no system message (add_generation_prompt={agp})",
                "family": "chatml",
                "template": t,
                "messages": no_system,
                "add_generation_prompt": agp,
                "eos": "</s>",
                "expected": hf(t, no_system, agp),
                "source": "transformers apply_chat_template",
            })
    if len(sys.argv) > 2:
        qwen3 = open(f"{sys.argv[2]}/Qwen-Qwen3-0.6B.jinja").read()
        think = [
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "<think>\nThe user greets me.\n</think>\n\nHi there"},
            {"role": "user", "content": "Who are you"},
            {"role": "assistant", "content": "<think>\n\nA question about me.\n\n</think>\n\n  I am an assistant"},
        ]
        convs = [
            ("the llama.cpp conversation", CONVERSATION, (True, False)),
            ("reasoning in both assistant turns, ending with one", think, (False,)),
            ("reasoning in past turns, then a question", think[:-1] + [{"role": "user", "content": "Why?"}], (True,)),
            ("no reasoning, ending with an assistant turn", CONVERSATION[:5], (False,)),
            ("reasoning only in the last turn", CONVERSATION[:4] + [think[-1]], (False,)),
        ]
        for what, msgs, agps in convs:
            for agp in agps:
                cases.append({
                    "name": f"Qwen/Qwen3-0.6B: {what} (add_generation_prompt={agp})",
                    "family": "qwen3",
                    "template": qwen3,
                    "messages": msgs,
                    "add_generation_prompt": agp,
                    "eos": "</s>",
                    "expected": hf(qwen3, msgs, agp),
                    "source": "transformers apply_chat_template",
                })
    json.dump({"conversation_roles": "system, user, assistant, user, assistant, user",
               "transformers": __import__("transformers").__version__,
               "cases": cases}, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
