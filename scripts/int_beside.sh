#!/usr/bin/env bash
# The integer runtime's numbers beside the simulated ones, for the very runs of a sweep
# (issue 6: Tables 4 and 5 "with the integer runtime's numbers beside the simulated ones").
# For every finished, quantized run among RUNS (run directories, or sweep outputs whose
# subdirectories are runs):
#   mobilequant export RUN --format hf,reference,int      -> OUT/<run>/export (linted)
#   mobilequant eval --runtime int --config <the run's own eval section>
#                                                         -> OUT/<run>/eval_int.{json,md}
# so the integer runtime scores the run's own protocol (tasks, data, window length,
# separator) on its own model, beside the simulation rebuilt from the export on the same
# windows, and that simulation in fp64 (the noise floor). Then
#   scripts/report.py int OUT -o OUT/int_table            -> the table, Markdown and CSV
# which puts each run's simulated figure from results.json (its whole test set) beside them.
#
#   scripts/int_beside.sh RUN_OR_SWEEP_DIR... -o OUT
#
# One OUT per sweep: OUT/<run name> must not mix runs of two sweeps (refused).
#
# Environment:
#   MQ_BIN         the binary (default build/mobilequant)
#   MQ_EVAL_LIMIT  first N documents per task (default: all, the run's own protocol); the
#                  integer runtime is slower than LibTorch, so SmolLM2 takes a subset
#   MQ_THREADS     integer runtime threads (default 0: every core)
#   MQ_ONLY        space-separated run names to take (default: every quantized run)
#   MQ_EVAL_SITES  1 adds --sites: the first window's per-site comparison with the fp64
#                  simulation, at the end of OUT/<run>/eval_int.md (the first site that differs)
#   MQ_COMPARE_DEVICE  a device (cuda) adds --compare-device: the export's fp32 simulation
#                  run there too (TF32 off), and its greedy agreement with the CPU's fp32
#                  simulation and with the integer runtime (a third table in int_table.md)
#   MQ_KEEP_EXPORT 1 keeps OUT/<run>/export (default: removed after the evaluation, only its
#                  export.json and int/manifest.json are kept: a SmolLM2 export is ~300 MB)
# Runs whose OUT/<run>/eval_int.json is newer than their results.json are skipped, so a
# call cut short (a GPU machine's 10-minute limit) continues where it stopped.
# FP runs (method or quant "fp") and unfinished runs are skipped with a line on stderr.
# Run from the repository root: the runs' configs name data relative to it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/int_beside.sh RUN_OR_SWEEP_DIR... -o OUT"
inputs=()
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o|--output) out=${2:?"$1 needs a directory"}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option '$1' ($usage)" >&2; exit 2 ;;
    *) inputs+=("$1"); shift ;;
  esac
done
[ -n "$out" ] && [ ${#inputs[@]} -gt 0 ] || { echo "$usage" >&2; exit 2; }
mq=${MQ_BIN:-$root/build/mobilequant}
[ -x "$mq" ] || { echo "error: $mq not found (build first, or set MQ_BIN)" >&2; exit 1; }
py=${MQ_PYTHON:-python3}
limit=${MQ_EVAL_LIMIT:--1}
threads=${MQ_THREADS:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log() { echo "+ $*" >> "$out/commands.txt"; echo "+ $*" >&2; "$@"; }
echo "# $(date -u +%FT%TZ) git ${MQ_GIT_REVISION:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo ?)}" >> "$out/commands.txt"

# The run directories: each input itself when it holds results.json or config.json, else its
# subdirectories that do.
runs=()
for d in "${inputs[@]}"; do
  [ -d "$d" ] || { echo "error: '$d' is not a directory" >&2; exit 2; }
  if [ -f "$d/results.json" ] || [ -f "$d/config.json" ]; then runs+=("$d"); continue; fi
  for s in "$d"/*/; do
    s=${s%/}
    { [ -f "$s/results.json" ] || [ -f "$s/config.json" ]; } && runs+=("$s")
  done
done
[ ${#runs[@]} -gt 0 ] || { echo "error: no run directory among: ${inputs[*]}" >&2; exit 2; }
for i in "${!runs[@]}"; do runs[$i]=$(cd "${runs[$i]}" && pwd); done
cd "$root"

done_any=0
for run in "${runs[@]}"; do
  name=$(basename "$run")
  if [ -n "${MQ_ONLY:-}" ] && ! [[ " $MQ_ONLY " == *" $name "* ]]; then continue; fi
  if [ ! -f "$run/results.json" ]; then
    echo "[int_beside] skip $name: not finished (no results.json)" >&2; continue
  fi
  dest=$out/$name
  if [ -f "$dest/run_results.json" ] && ! cmp -s "$dest/run_results.json" "$run/results.json"; then
    echo "error: $dest holds another run's results (not those of $run): give each sweep its" \
      "own OUT, or remove $dest" >&2
    exit 1
  fi
  if [ -f "$dest/eval_int.json" ] && [ "$dest/eval_int.json" -nt "$run/results.json" ]; then
    echo "[int_beside] $name: done already ($dest/eval_int.json)" >&2; done_any=1; continue
  fi
  # The run's own evaluation protocol as an eval config (its fields are a subset of eval's),
  # layer-error left out (a diagnostic the integer runtime does not compute).
  mkdir -p "$dest"
  rc=0
  "$py" - "$run/results.json" "$dest/eval_config.json" "$limit" <<'EOF' || rc=$?
import json, sys
res = json.load(open(sys.argv[1]))
cfg = res["config"]
if cfg["method"] == "fp" or cfg["quant"] == "fp":
    sys.exit(3)
ev = dict(cfg["eval"])
ev["tasks"] = [t for t in ev["tasks"] if t != "layer-error"]
if not ev["tasks"]:
    sys.exit(4)
if int(sys.argv[3]) >= 0:
    ev["limit"] = int(sys.argv[3])
json.dump(ev, open(sys.argv[2], "w"), indent=2)
EOF
  if [ $rc != 0 ]; then
    case $rc in
      3) echo "[int_beside] skip $name: a float run (nothing to export)" >&2 ;;
      4) echo "[int_beside] skip $name: it evaluated no perplexity task" >&2 ;;
      *) echo "error: $run/results.json: cannot read its config" >&2; exit 1 ;;
    esac
    rm -rf "$dest"; continue
  fi
  if [ ! -d "$run/model" ]; then
    echo "error: $run has no model/ (its weights were not kept): nothing to export" >&2; exit 1
  fi
  cp "$run/results.json" "$dest/run_results.json"
  log "$mq" export "$run" -o "$dest/export" --format hf,reference,int --force > "$dest/export.log" 2>&1 ||
    { echo "error: export of $run failed: $dest/export.log" >&2; tail -5 "$dest/export.log" >&2; exit 1; }
  extra=()
  [ "${MQ_EVAL_SITES:-0}" = 1 ] && extra=(--sites)
  [ -n "${MQ_COMPARE_DEVICE:-}" ] && extra+=(--compare-device "$MQ_COMPARE_DEVICE")
  log "$mq" eval --config "$dest/eval_config.json" -m "$dest/export" --runtime int \
    --threads "$threads" "${extra[@]}" -o "$dest/eval_int.json.tmp" > "$dest/eval_int.md" 2> "$dest/eval.log" ||
    { echo "error: eval --runtime int of $dest/export failed: $dest/eval.log" >&2; tail -5 "$dest/eval.log" >&2; exit 1; }
  mv "$dest/eval_int.json.tmp" "$dest/eval_int.json"
  cat "$dest/eval_int.md" >&2
  if [ "${MQ_KEEP_EXPORT:-0}" != 1 ]; then
    cp "$dest/export/export.json" "$dest/export.json"
    cp "$dest/export/int/manifest.json" "$dest/int_manifest.json"
    rm -rf "$dest/export"
  fi
  done_any=1
done
[ $done_any = 1 ] || { echo "error: no quantized, finished run among: ${inputs[*]}" >&2; exit 1; }
log "$py" "$root/scripts/report.py" int "$out" -o "$out/int_table"
