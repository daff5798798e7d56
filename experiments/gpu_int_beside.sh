#!/usr/bin/env bash
# Runs ON the GPU machine (through scripts/gpu/remote.sh run), after experiments/gpu_sweep.sh
# has trained a sweep there: scripts/int_beside.sh on that sweep's runs (their weights stay on
# the machine while it is warm), for at most SECONDS, then packs the tables under $OUT.
# The integer runtime runs on the machine's CPU cores (16), on the first MQ_EVAL_LIMIT
# documents (default 2: about 140 s a run for SmolLM2) of each run's own evaluation; the
# simulation is rebuilt from each export on the same windows. The fp32 simulation also runs on
# the GPU (MQ_COMPARE_DEVICE, default cuda; empty: not): is it the CPU's model?
#
#   scripts/gpu/remote.sh run experiments/gpu_int_beside.sh SWEEP.json SECONDS [-o runs/NAME]
#
# - Runs: /tmp/mq/<the sweep's output> (or /tmp/mq/runs/NAME with -o), as gpu_sweep.sh wrote
#   them; the sweep must have run in this machine's lifetime (the weights do not travel).
# - Output: /tmp/mq/int/<name>/ (int_beside.sh's OUT: per run eval_int.json/.md,
#   eval_config.json, run_results.json, the export's export.json and int manifest, logs;
#   int_table.md/.csv), packed as $OUT/gpu_int_<name>.tgz. Runs already evaluated are skipped,
#   so a call cut short by SECONDS continues in the next call.
set -uo pipefail
sweep=${1:?usage: experiments/gpu_int_beside.sh SWEEP.json SECONDS [-o runs/NAME]}
secs=${2:?usage: experiments/gpu_int_beside.sh SWEEP.json SECONDS [-o runs/NAME]}
shift 2
root=$(pwd)
[ -f "$sweep" ] || { echo "error: no sweep file '$sweep' (give a path from the repository root)" >&2; exit 2; }
[ -x "$root/build/mobilequant" ] || { echo "error: build/mobilequant not found; run scripts/gpu/remote.sh setup first" >&2; exit 1; }
: "${MQ_SHARED_DIR:?run through scripts/gpu/remote.sh run (it sets MQ_SHARED_DIR)}"
export MQ_DATA_DIR=${MQ_DATA_DIR:-$MQ_SHARED_DIR/data}
[ -e "$root/../shared" ] || ln -s "$MQ_SHARED_DIR" "$root/../shared"
. "$root/experiments/gpu_output.sh"
sweep_output "$sweep" "$@"
[ ${#args[@]} = 0 ] || { echo "error: unknown argument '${args[0]}'" >&2; exit 2; }
[ -d "$runs" ] || { echo "error: $runs does not exist: run experiments/gpu_sweep.sh $sweep first, on this machine" >&2; exit 1; }
dest=/tmp/mq/int/$name
mkdir -p "$dest"
export MQ_EVAL_LIMIT=${MQ_EVAL_LIMIT:-2}
export MQ_COMPARE_DEVICE=${MQ_COMPARE_DEVICE-cuda}
echo "+ scripts/int_beside.sh $runs -o $dest for at most $secs s (MQ_EVAL_LIMIT=$MQ_EVAL_LIMIT MQ_COMPARE_DEVICE=$MQ_COMPARE_DEVICE)"
# At the limit the whole process group goes: `timeout` would kill int_beside.sh alone, and the
# export or evaluation it had started would run on into the next call (it did, 2026-11-24).
setsid scripts/int_beside.sh "$runs" -o "$dest" > "$dest/int_beside.log" 2>&1 &
pid=$!
setsid bash -c "sleep $secs; kill -KILL -- -$pid" > /dev/null 2>&1 &
watchdog=$!
wait "$pid"
rc=$?  # 137 when the watchdog killed it
kill -- "-$watchdog" 2>/dev/null
echo "[gpu_int_beside] exit $rc$([ $rc = 137 ] && echo ' (time limit: call again to continue)')"
grep -E "^\[int_beside\]|^error|^\| docs|^\| wikitext" "$dest/int_beside.log" | tail -n 30
[ -f "$dest/int_table.md" ] && [ $rc = 0 ] && cat "$dest/int_table.md"
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_int_$name.tgz" -C "$dest" --exclude=export --exclude='export.partial*' .
exit 0
