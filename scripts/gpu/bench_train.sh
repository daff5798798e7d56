#!/usr/bin/env bash
# Runs ON the GPU machine (via scripts/gpu/remote.sh run): `mobilequant bench train`, the
# end-to-end training step at sequence length 2048, batch 1, fp32 / TF32 / bf16 rows, W8A8 with
# every LET pair, LWC and ARL (MobileQuant's training), for
#   - SmolLM2-135M-Instruct: the checkpoint given as MODEL (or, with "-" or a missing file, a
#     random model of the smollm2-135m shape),
#   - a random model of the tinyllama-1.1b shape,
# with and without blocks recomputed in the backward pass (--recompute: far less memory), and
# bf16 runs of both with --profile (forward / backward / optimizer and the top operators and
# kernels: where the time goes), and the step replayed as a CUDA graph (--cuda-graph).
#   scripts/gpu/bench_train.sh [MODEL|-] [OUTDIR] [all|smollm2|tinyllama|bf16|references]
# OUTDIR (default /tmp/mq/out/bench_train) gets per run a .json and a .md (table and log), and
# commands.txt and gpu.txt; packed as $OUT/gpu_bench_train.tgz when $OUT is set. Use `smollm2`
# and `tinyllama` in two calls if one call's time limit is short; `bf16` runs only the rows of
# the bf16 throughput goal (both shapes as CUDA graphs, and the 1.1B profile); `references` runs
# both shapes' TF32 and bf16 graph steps with --references (the float model's forward + backward
# without quantizers and the matmuls alone, on the same shape: the ceiling of % of peak).
set -uo pipefail
model=${1:--}
out=${2:-/tmp/mq/out/bench_train}
which=${3:-all}
mkdir -p "$out"
mq=${MQ:-build/mobilequant}
common=(--device cuda --quant w8a8 --let all --seqlen 2048 --batch 1 --steps 10 --warmup 3)
run() { echo "+ $*" | tee -a "$out/commands.txt"; "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
if [ "$model" != "-" ] && [ -e "$model" ]; then smol=(-m "$model"); else smol=(--shape smollm2-135m); fi

bench() {  # NAME ARGS...: one run, table to NAME.md, JSON to NAME.json
  local name=$1; shift
  run "$mq" bench train "$@" "${common[@]}" -o "$out/$name.json" > "$out/$name.md" 2>&1
  echo "== $name (exit $?)"; grep -E '^\|' "$out/$name.md" | head -20
}
case "$which" in
  all|smollm2)
    bench train_smollm2_135m "${smol[@]}" --precision fp32,tf32,bf16
    bench train_smollm2_135m_recompute "${smol[@]}" --precision tf32,bf16 --recompute
    bench train_smollm2_135m_profile_bf16 "${smol[@]}" --precision bf16 --profile --profile-top 20
    bench train_smollm2_135m_cuda_graph "${smol[@]}" --precision fp32,tf32,bf16 --cuda-graph
    ;;&
  all|tinyllama)
    bench train_tinyllama_1.1b --shape tinyllama-1.1b --precision fp32,tf32,bf16
    bench train_tinyllama_1.1b_recompute --shape tinyllama-1.1b --precision fp32,tf32,bf16 \
      --recompute
    bench train_tinyllama_1.1b_profile_bf16 --shape tinyllama-1.1b --precision bf16 --profile \
      --profile-top 25
    bench train_tinyllama_1.1b_cuda_graph --shape tinyllama-1.1b --precision fp32,tf32,bf16 \
      --cuda-graph
    bench train_tinyllama_1.1b_cuda_graph_recompute --shape tinyllama-1.1b --precision tf32,bf16 \
      --cuda-graph --recompute
    ;;
  bf16)  # the throughput goal's rows only: both shapes in bf16 as CUDA graphs, and the profile
    bench train_tinyllama_1.1b_cuda_graph_bf16 --shape tinyllama-1.1b --precision bf16 \
      --cuda-graph
    bench train_tinyllama_1.1b_profile_bf16 --shape tinyllama-1.1b --precision bf16 --profile \
      --profile-top 25
    bench train_smollm2_135m_cuda_graph_bf16 "${smol[@]}" --precision bf16 --cuda-graph
    ;;
  references)  # the quantized step against the same matmul FLOPs without the quantizers
    bench train_tinyllama_1.1b_references --shape tinyllama-1.1b --precision tf32,bf16 \
      --cuda-graph --references
    bench train_smollm2_135m_references "${smol[@]}" --precision tf32,bf16 --cuda-graph \
      --references
    ;;
  smollm2) ;;
  *) echo "unknown set '$which' (all, smollm2, tinyllama, bf16, references)" >&2; exit 2 ;;
esac
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_bench_train.tgz" -C "$out" .
exit 0
