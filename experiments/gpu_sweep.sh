#!/usr/bin/env bash
# Runs ON the GPU machine (through scripts/gpu/remote.sh run): one sweep of experiments/ on
# SmolLM2-135M-Instruct, for at most SECONDS, then packs what it wrote under $OUT.
#
#   scripts/gpu/remote.sh run experiments/gpu_sweep.sh SWEEP.json SECONDS [--set key=value ...] [-o runs/NAME]
#
# - Model: $MQ_MODEL, by default $MQ_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf (what
#   `remote.sh model` installs); MQ_MODEL=- keeps the sweep's own model.
# - Data: MQ_DATA_DIR=$MQ_SHARED_DIR/data (the texts prepare.sh carries). Configs that name
#   "../shared/..." (relative to the repository root) find it through a link
#   ../shared -> $MQ_SHARED_DIR made when the copy has no ../shared.
# - Runs: /tmp/mq/<the sweep's output>, e.g. /tmp/mq/runs/table1-static-vs-edge-smollm2
#   (-o runs/NAME: /tmp/mq/runs/NAME instead, for a variant made with --set).
#   Runs already complete are skipped and an interrupted one resumes from its checkpoint, so
#   calling this again continues where the last call stopped (each call <= 10 minutes).
#   A carried copy of <the sweep's output> (git-ignored runs/...: a previous session's packed
#   results unpacked there) seeds the directory with its complete runs, so a new session
#   skips what is done.
# - $OUT/gpu_<name>.tgz: every run directory without its model weights and checkpoints
#   (config, env, log, metrics.jsonl, results.json, calibrated_quantizers.safetensors and
#   model/quantizers.safetensors), results.md/csv, sweep.log, commands.txt,
#   gpu.txt. To continue in a later session: unpack its runs/ into <the sweep's output> here
#   and name that directory in the call's carry list.
set -uo pipefail
sweep=${1:?usage: experiments/gpu_sweep.sh SWEEP.json SECONDS [--set key=value ...]}
secs=${2:?usage: experiments/gpu_sweep.sh SWEEP.json SECONDS [--set key=value ...]}
shift 2
root=$(pwd)
[ -f "$sweep" ] || { echo "error: no sweep file '$sweep' (give a path from the repository root)" >&2; exit 2; }
mq=$root/build/mobilequant
[ -x "$mq" ] || { echo "error: $mq not found; run scripts/gpu/remote.sh setup first" >&2; exit 1; }
: "${MQ_SHARED_DIR:?run through scripts/gpu/remote.sh run (it sets MQ_SHARED_DIR)}"
export MQ_DATA_DIR=${MQ_DATA_DIR:-$MQ_SHARED_DIR/data}
model=${MQ_MODEL:-${MQ_MODELS_DIR:-/tmp/mq/models}/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ "$model" != "-" ] && [ ! -f "$model" ]; then
  echo "error: model $model not found; install it with scripts/gpu/remote.sh model (one call per part)" >&2
  exit 1
fi
# "../shared/data/..." in the configs is relative to the repository root.
if [ ! -e "$root/../shared" ]; then
  ln -s "$MQ_SHARED_DIR" "$root/../shared" ||
    { echo "error: cannot link $root/../shared -> $MQ_SHARED_DIR" >&2; exit 1; }
fi
[ -d "$root/../shared/data" ] || echo "warning: $root/../shared/data missing: '../shared/...' paths will fail" >&2

# -o/--output DIR among the extra arguments replaces the sweep's output (runs/NAME).
. "$root/experiments/gpu_output.sh"
sweep_output "$sweep" "$@"
out=/tmp/mq/out/$name
rm -rf "$out"; mkdir -p "$out" "$runs"
# A previous session's results, carried back in: finished runs are skipped.
# Only complete runs (with results.json) are taken: an incomplete one starts again.
if [ -d "$root/$output" ]; then
  for r in "$root/$output"/*/results.json; do
    [ -f "$r" ] || continue
    d=$(basename "$(dirname "$r")")
    [ -e "$runs/$d/results.json" ] || { rm -rf "$runs/$d"; cp -r "$(dirname "$r")" "$runs/$d"; }
    echo "[gpu_sweep] carried in: $d (complete)"
  done
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
echo "# $(date -u +%FT%TZ) git ${MQ_GIT_REVISION:-unknown}" >> "$out/commands.txt"
sets=()
[ "$model" != "-" ] && sets=(--set "model=$model")
cmd=("$mq" sweep "$sweep" ${sets[@]+"${sets[@]}"} --output "$runs" ${args[@]+"${args[@]}"})
echo "+ timeout --signal=KILL $secs ${cmd[*]}" | tee -a "$out/commands.txt"
timeout --signal=KILL "$secs" "${cmd[@]}" > "$out/sweep.log" 2>&1
rc=$?
echo "[gpu_sweep] sweep exit $rc$([ $rc = 137 ] && echo ' (time limit: call again to continue)')"
grep -E "^\[sweep\]|^\[run\] (starting|resuming|done)|^error" "$out/sweep.log" | tail -n 25

mkdir -p "$out/runs"
# Weights and checkpoints stay; the learned quantizers (model/quantizers.safetensors and
# quantization.json, ~0.5 MiB) travel, for report.py's before/after range plots.
(cd "$runs" && { find . -name model -prune -o -name checkpoint -prune -o -type f -print
                 find . -path '*/model/quantizers.safetensors' -o -path '*/model/quantization.json'; } |
   tar cf - -T -) | tar xf - -C "$out/runs"
cat "$runs/results.md" 2>/dev/null
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_$name.tgz" -C "$out" .
exit 0
