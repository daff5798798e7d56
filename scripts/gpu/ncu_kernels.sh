#!/usr/bin/env bash
# Runs ON the GPU machine (via scripts/gpu/remote.sh run): Nsight Compute on the kernels of one
# end-to-end training step of the tinyllama-1.1b shape (bf16, W8A8, every LET pair, seqlen 2048)
# whose names match REGEX, COUNT launches of them after SKIP: which pipe or memory path limits
# each kernel (what to tune before tuning it).
#   scripts/gpu/ncu_kernels.sh REGEX [COUNT] [SKIP] [OUTDIR]
# OUTDIR (default /tmp/mq/out/ncu) gets report.txt (the details page of every profiled launch:
# speed of light, compute workload with the per-pipe utilisation, instruction statistics, warp
# state statistics, occupancy) and command.txt; copied to $OUT when set.
set -uo pipefail
regex=${1:?usage: scripts/gpu/ncu_kernels.sh REGEX [COUNT] [SKIP] [OUTDIR]}
count=${2:-2}
skip=${3:-0}
out=${4:-/tmp/mq/out/ncu}
mkdir -p "$out"
ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1 || true)
if [ -z "$ncu" ]; then
  echo "[ncu] Nsight Compute (ncu) is not installed on this machine" | tee "$out/report.txt"
  exit 3
fi
cmd=("$ncu" --kernel-name "regex:$regex" --launch-skip "$skip" --launch-count "$count"
     --section SpeedOfLight --section ComputeWorkloadAnalysis --section InstructionStats
     --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis
     --section LaunchStats
     "${MQ:-build/mobilequant}" bench train --shape tinyllama-1.1b --precision bf16
     --device cuda --quant w8a8 --let all --seqlen 2048 --batch 1 --steps 1 --warmup 1)
echo "${cmd[*]}" > "$out/command.txt"
"${cmd[@]}" > "$out/report.txt" 2>&1
rc=$?
[ -n "${OUT:-}" ] && cp "$out"/*.txt "$OUT/"
exit $rc
