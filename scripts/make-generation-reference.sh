#!/usr/bin/env bash
# Regenerates the text-generation references that the Rust server's tests
# compare against (tools/reference/make_generation_reference.py says what is
# in them):
#
#   server/tests/fixtures/tiny_generation_reference.json   transformers' logits
#       and greedy tokens of the tiny random Llama, Qwen2 and Qwen3
#       checkpoints of tools/reference/tiny_checkpoint.py (seed 7)
#   server/tests/fixtures/smollm2_tokenization.json        SmolLM2's GGUF
#       tokenizer on a corpus, transformers and llama.cpp side by side, and
#       its chat template
#   server/tests/fixtures/smollm2_llamacpp_greedy.json     llama.cpp's greedy
#       continuations of 10 prompts with the same GGUF file
#
# RUN BY HAND ONLY, NEVER IN CI: it needs the reference virtualenv with
# PyTorch and transformers (several GiB; .cache/venv-reference, shared with
# scripts/make-reference.sh) and the llama.cpp one (scripts/llamacpp-venv.sh,
# a long build), both in the per-user cache (scripts/cache-env.sh), and the
# SmolLM2 GGUF file (scripts/fetch-smollm2.sh). CI only reads the committed
# fixtures.
#
#   scripts/make-generation-reference.sh                 everything
#   scripts/make-generation-reference.sh --no-llamacpp   without llama.cpp:
#       smollm2_tokenization.json then holds transformers' ids only
#       ("compared_with_llamacpp": false), and smollm2_llamacpp_greedy.json
#       is left as it is
#
# Idempotent: the virtualenvs and the model are made when missing (no-ops
# when present); the fixtures are rewritten whole. Nothing is downloaded from
# a model hub (HF_HUB_OFFLINE=1): the models are local files.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh

with_llamacpp=1
case "${1-}" in
  "") ;;
  --no-llamacpp) with_llamacpp=0 ;;
  *) echo "usage: scripts/make-generation-reference.sh [--no-llamacpp]" >&2; exit 2 ;;
esac

reqs="tools/reference/requirements.txt"
script="tools/reference/make_generation_reference.py"
fixtures="server/tests/fixtures"
gguf="SmolLM2-135M-Instruct.Q4_1.gguf"

real_venv=$(cache_venv make-generation-reference reference "$reqs")
cache_link "$root/.cache/venv-reference" "$real_venv"
venv=".cache/venv-reference"

model_dir=$(scripts/fetch-smollm2.sh)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
llamacpp_args=()
if [ "$with_llamacpp" = 1 ]; then
  llamacpp_venv=$(scripts/llamacpp-venv.sh)
  "$llamacpp_venv/bin/python" "$script" llamacpp "$model_dir/$gguf" "$tmp/llamacpp.json"
  llamacpp_args=(--llamacpp "$tmp/llamacpp.json")
else
  echo "make-generation-reference: without llama.cpp (--no-llamacpp): $fixtures/smollm2_llamacpp_greedy.json is left as it is" >&2
fi
"$venv/bin/python" "$script" smollm2 "$model_dir" "$gguf" "$fixtures" "${llamacpp_args[@]}"
"$venv/bin/python" "$script" tiny "$fixtures"

for f in tiny_generation_reference.json smollm2_tokenization.json smollm2_llamacpp_greedy.json; do
  if [ -f "$fixtures/$f" ]; then
    echo "make-generation-reference: $fixtures/$f ($(wc -c <"$fixtures/$f") bytes)"
  fi
done
