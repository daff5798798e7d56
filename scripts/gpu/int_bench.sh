#!/usr/bin/env bash
# Runs ON the GPU machine (scripts/gpu/remote.sh run scripts/gpu/int_bench.sh): the integer
# runtime's speed on the machine's CPU (issue 5), everything in one call:
#   1. the runtime's kernel tests (gemmlowp and, where the CPU has it, AVX-512 VNNI, exact);
#   2. SmolLM2-135M-Instruct quantized W8A8 with SmoothQuant-Edge (closed form, on the GPU)
#      and exported with --format hf,int;
#   3. `bench int` (prefill at 128/256/512 against the fp32 LibTorch forward, one run each) at
#      all cores and at 1 thread, with the gemmlowp and the VNNI GEMM, and a per-stage profile.
# Output: /tmp/mq/out/int-bench (commands.txt, cpu.txt, tests.txt, bench_*.md/json).
# MQ_BENCH_THREADS: the thread counts to bench (default: all cores, then 1).
# MQ_BENCH_GEMMS: the integer GEMMs to bench (default: gemmlowp vnni).
set -uo pipefail
mq=build/mobilequant
smol=$MQ_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
data=$MQ_SHARED_DIR/data
work=/tmp/mq/intbench
out=/tmp/mq/out/int-bench
rm -rf "$out"; mkdir -p "$out" "$work"
run() { echo "+ $*" >> "$out/commands.txt"; echo "+ $*" >&2; "$@"; }
cores=$(nproc)
echo "# $(date -u +%FT%TZ) GPU machine ($cores CPU cores), git ${MQ_GIT_REVISION:-?}" >> "$out/commands.txt"
{ grep -m1 "model name" /proc/cpuinfo
  grep -m1 -o -w 'avx512f\|avx512bw\|avx512_vnni\|avx512vnni\|amx_int8\|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '
  echo; } > "$out/cpu.txt"
run build/tests/mq_tests -# "[#test_vnni_gemm],[#test_int_ops],[#test_int_attention],[#test_int_model],[#test_parallel]" > "$out/tests.txt" 2>&1
tail -n 3 "$out/tests.txt"
if [ ! -f "$work/export/int/manifest.json" ]; then
  run "$mq" run configs/runs/smollm2.json --set "model=$smol" --set quant=w8a8 \
    --set method=smoothquant-edge --set device=cuda --set calib.samples=32 \
    --set "calib.data=$data/wikitext2/wiki.valid.tokens.txt" --set 'eval.tasks=[]' \
    --set "output=$work/run" --force > "$out/run.log" 2>&1 || { tail -n 20 "$out/run.log"; exit 1; }
  run "$mq" export "$work/run" -o "$work/export" --format hf,int --force > "$out/export.log" 2>&1 \
    || { tail -n 20 "$out/export.log"; exit 1; }
fi
for threads in ${MQ_BENCH_THREADS:-$cores 1}; do
  for gemm in ${MQ_BENCH_GEMMS:-gemmlowp vnni}; do
    extra=()
    [ "$gemm" = vnni ] && extra=(--profile)
    run "$mq" bench int -m "$work/export" --seqlens 128,256,512 --threads "$threads" \
      --gemm "$gemm" "${extra[@]}" -o "$out/bench_t${threads}_$gemm.json" \
      > "$out/bench_t${threads}_$gemm.md" 2> "$out/bench_t${threads}_$gemm.log" \
      || { tail -n 5 "$out/bench_t${threads}_$gemm.log"; continue; }
    echo "== threads $threads, $gemm"; cat "$out/bench_t${threads}_$gemm.md"
  done
done
