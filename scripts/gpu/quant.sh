#!/usr/bin/env bash
# Runs ON the GPU machine (via scripts/gpu/remote.sh run): the GPU figures of the quantization
# core. Two steps, each within one call's time limit; each packs what it wrote under $OUT:
#   quant.sh tests       the unit and model tests built with CUDA (tests.log) and
#                        `bench quant` on SmolLM2-135M in fp32 and bf16 (bench_quant_*.md/json)
#   quant.sh baselines   scripts/quant_baselines.sh on CUDA for SmolLM2-135M and stories260K
#                        (FP, W8A16, W4A16, full W8A8, W8A8 RTN, SmoothQuant-Static/Edge;
#                        WikiText both protocols and TinyStories), quantized weights left out
set -uo pipefail
step=${1:?usage: scripts/gpu/quant.sh tests|baselines}
out=/tmp/mq/out/$step
rm -rf "$out"; mkdir -p "$out"
smol=$MQ_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
stories=$MQ_SHARED_DIR/models/stories260K/stories260K.bin
export MQ_DATA_DIR=$MQ_SHARED_DIR/data
mq=build/mobilequant
run() { echo "+ $*" | tee -a "$out/commands.txt"; "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
git -C . rev-parse HEAD > "$out/git_revision.txt" 2>/dev/null || true
case "$step" in
  tests)
    [ -d .whl ] && python3 -m pip install -q --no-index --no-deps --target /tmp/mq/site .whl/*.whl \
      && export PYTHONPATH=/tmp/mq/site
    for dtype in fp32 bf16; do
      run $mq bench quant -m "$smol" --device cuda --dtype "$dtype" --quant w8a8,w4a8 \
        --seqlens 128,512,2048 --reps 20 --warmup 3 -o "$out/bench_quant_smollm2_cuda_$dtype.json" \
        > "$out/bench_quant_smollm2_cuda_$dtype.md" 2>&1
    done
    (cd build && run ctest -L "unit|model" --output-on-failure) > "$out/tests.log" 2>&1
    grep -hE '^\| (float|explicit|w8a8 \(cached|w4a8 \(cached)' "$out"/bench_quant_*.md
    tail -n 8 "$out/tests.log"
    ;;
  baselines)
    MQ=$mq run scripts/quant_baselines.sh "$smol" "$out/smollm2" --device cuda > "$out/smollm2.log" 2>&1
    MQ=$mq run scripts/quant_baselines.sh "$stories" "$out/stories260k" --device cuda \
      > "$out/stories260k.log" 2>&1
    rm -rf "$out"/*/*/model.safetensors "$out"/*/stats
    cat "$out"/*/table.md
    ;;
  *) echo "unknown step '$step'" >&2; exit 2 ;;
esac
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_quant_$step.tgz" -C "$out" .
