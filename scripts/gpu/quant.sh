#!/usr/bin/env bash
# Runs ON the GPU machine (via scripts/gpu/remote.sh run): the GPU figures of the quantization
# core (issue 3). Writes under /tmp/mq/out and packs it as $OUT/gpu_quant.tgz:
#   - tests.log: the unit and model tests built with CUDA,
#   - bench_quant_*.md/json: float vs simulated W8A8/W4A8 forward time on SmolLM2-135M (CUDA),
#   - smollm2/: scripts/quant_baselines.sh on CUDA (FP, W8A16, W4A16, full W8A8, W8A8 RTN,
#     SmoothQuant-Static/Edge; WikiText both protocols and TinyStories),
#   - stories260k/: the same for stories260K on CUDA.
set -uo pipefail
out=/tmp/mq/out
rm -rf "$out"; mkdir -p "$out"
smol=$MQ_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
stories=$MQ_SHARED_DIR/models/stories260K/stories260K.bin
export MQ_DATA_DIR=$MQ_SHARED_DIR/data
mq=build/mobilequant
run() { echo "+ $*" | tee -a "$out/commands.txt"; "$@"; }
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --target /tmp/mq/site .whl/*.whl \
  && export PYTHONPATH=/tmp/mq/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
(cd build && run ctest -L "unit|model" --output-on-failure) > "$out/tests.log" 2>&1
for dtype in fp32 bf16; do
  run $mq bench quant -m "$smol" --device cuda --dtype "$dtype" --quant w8a8,w4a8 \
    --seqlens 128,512,2048 --reps 20 --warmup 3 -o "$out/bench_quant_smollm2_cuda_$dtype.json" \
    > "$out/bench_quant_smollm2_cuda_$dtype.md" 2>&1
done
MQ=$mq run scripts/quant_baselines.sh "$smol" "$out/smollm2" --device cuda > "$out/smollm2.log" 2>&1
MQ=$mq run scripts/quant_baselines.sh "$stories" "$out/stories260k" --device cuda > "$out/stories260k.log" 2>&1
rm -rf "$out"/smollm2/*/model.safetensors "$out"/stories260k/*/model.safetensors "$out"/*/stats
tail -n 12 "$out"/*.md "$out"/*/table.md
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_quant.tgz" -C "$out" .
