#!/usr/bin/env bash
# Runs ON the GPU machine (via scripts/gpu/remote.sh run): the GPU figures of results/.
# Writes everything under /tmp/mq/out and packs it as $OUT/gpu_results.tgz: logs and JSON of
#   - the [model] tests (CUDA parity of the tiny models, SmolLM2 checks),
#   - bench forward on SmolLM2-135M: CUDA fp32 and bf16, against transformers in the same run,
#   - WikiText (lm-eval protocol) and TinyStories perplexity of both real models on CUDA,
#   - eval/reference/hf_ppl.py's independent WikiText figure for SmolLM2 (transformers, CUDA).
set -uo pipefail
out=/tmp/mq/out
rm -rf "$out"; mkdir -p "$out"
smol=$MQ_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
stories=$MQ_SHARED_DIR/models/stories260K/stories260K.bin
data=$MQ_SHARED_DIR/data
mq=build/mobilequant
run() { echo "+ $*" | tee -a "$out/commands.txt"; "$@"; }
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --target /tmp/mq/site .whl/*.whl \
  && export PYTHONPATH=/tmp/mq/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
(cd build && run ctest -L "unit|model" --output-on-failure) > "$out/tests.log" 2>&1
for dtype in fp32 bf16; do
  run $mq bench forward -m "$smol" --device cuda --dtype "$dtype" --seqlens 128,512,2048 \
    --reps 20 --warmup 3 -o "$out/bench_smollm2_cuda_$dtype.json" > "$out/bench_smollm2_cuda_$dtype.md" 2>&1
done
run $mq eval -m "$smol" --device cuda --task wikitext --task wikitext-gptq \
  --data wikitext="$data/wikitext2/wiki.test.raw.txt" --data wikitext-gptq="$data/wikitext2/wiki.test.raw.txt" \
  -o "$out/eval_smollm2_cuda.json" > "$out/eval_smollm2_cuda.md" 2>&1
run $mq eval -m "$stories" --device cuda --task docs --data "$data/tinystories/valid.head.txt" \
  --max-length 512 -o "$out/eval_stories260k_cuda.json" > "$out/eval_stories260k_cuda.md" 2>&1
run python3 eval/reference/hf_ppl.py --model "$MQ_MODELS_DIR" --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf \
  --device cuda --data "$data/wikitext2/wiki.test.raw.txt" > "$out/hf_ppl_smollm2_cuda.txt" 2>&1
run python3 eval/reference/hf_ppl.py --model "$MQ_MODELS_DIR" --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf \
  --device cuda --gptq --data "$data/wikitext2/wiki.test.raw.txt" > "$out/hf_ppl_gptq_smollm2_cuda.txt" 2>&1
tail -n 3 "$out"/*.md "$out"/*.txt
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_results.tgz" -C "$out" .
