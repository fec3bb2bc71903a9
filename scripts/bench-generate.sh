#!/usr/bin/env bash
# Text-generation benchmark, side by side in one run: our engine
# (`cargo bench -p openmodel-server --bench generate`) and llama.cpp
# (llama-cpp-python, tools/bench/llamacpp_generate.py) on the same GGUF file
# (SmolLM2-135M-Instruct Q4_1, scripts/fetch-smollm2.sh), the same
# 128-token prompt and the same number of threads: prefill time of the
# prompt and of 512 and 2048 tokens (the prompt repeated), decode tokens/s
# of one greedy stream, and our aggregate tokens/s at 1, 4 and 16
# concurrent streams of 128 new tokens, and 16 again with
# the KV cache in f16 (--kv-cache-dtype f16), and 16 whose prompts share
# their first 127 tokens (what prefix caching saves; the other rows' prompts
# differ from their first token). Prints a table and the machine (nproc,
# CPU model, instruction sets).
#
# Usage: scripts/bench-generate.sh [THREADS] (default: nproc). Not part of
# CI: llama-cpp-python is built from source (scripts/llamacpp-venv.sh, a
# few minutes once, cached).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
model=$(scripts/fetch-smollm2.sh)
venv=$(scripts/llamacpp-venv.sh)
export RAYON_NUM_THREADS=$threads
ours=$(cargo bench -q -p openmodel-server --bench generate -- --json | tail -n 1)
prompt=$(printf '%s' "$ours" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prompt_ids"]))')
theirs=$("$venv/bin/python" tools/bench/llamacpp_generate.py \
  "$model/SmolLM2-135M-Instruct.Q4_1.gguf" "$threads" "$prompt")
python3 - "$ours" "$theirs" <<'PY'
import json, os, platform, subprocess, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"machine: nproc {os.cpu_count()}, {cpu}; our kernels: {ours['isa']}; threads: {ours['threads']}")
print(f"model: SmolLM2-135M-Instruct Q4_1 GGUF; prompt {ours['prompt_tokens']} tokens, {ours['new_tokens']} new tokens, greedy")
print(f"our aggregates: medians of {ours['rounds']} rounds, each running every configuration once")
print(f"{'':34}{'openmodel':>12}{'llama.cpp ' + theirs['version']:>22}{'ratio':>8}")
def row(name, a, b, better_high):
    ratio = (a / b) if better_high else (b / a)
    print(f"{name:34}{a:>12.1f}{b:>22.1f}{ratio:>7.2f}x")
row("prefill of the prompt (ms)", ours["prefill_ms"], theirs["prefill_ms"], False)
for n in sorted(ours["long_prefill_ms"], key=int):
    row(f"prefill of {n} tokens (ms)", ours["long_prefill_ms"][n], theirs["long_prefill_ms"][n], False)
row("decode, one stream (tokens/s)", ours["decode_tokens_per_s"], theirs["decode_tokens_per_s"], True)
single = ours["aggregate_tokens_per_s"]["1"]
for n, t in sorted(ours["aggregate_tokens_per_s"].items(), key=lambda kv: int(kv[0])):
    print(f"{'aggregate, ' + n + ' streams (tokens/s)':34}{t:>12.1f}{'-':>22}{t / single:>7.2f}x ours at 1")
half = ours["aggregate_16_f16_kv_tokens_per_s"]
print(f"{'  the same, f16 KV cache':34}{half:>12.1f}{'-':>22}{half / single:>7.2f}x ours at 1")
shared = ours["aggregate_16_shared_prefix_tokens_per_s"]
print(f"{'  16, prompts sharing 127 tokens':34}{shared:>12.1f}{'-':>22}{shared / single:>7.2f}x ours at 1")
PY
