#!/usr/bin/env bash
# Runs ON the GPU machine (via scripts/gpu/remote.sh run): the training figures of SmolLM2.
#   train.sh probe            a short end-to-end and a short block-wise run (step times, to
#                             choose epochs that fit the device time), and `bench train` quick
#   train.sh sweep SECONDS [--set k=v ...]
#                             configs/sweeps/acceptance-smollm2.json for at most SECONDS: runs
#                             already complete are skipped and an interrupted one resumes from
#                             its checkpoint, so calling it again continues where it stopped
#   train.sh bench [all|smollm2|tinyllama|bf16|references]   scripts/gpu/bench_train.sh
# Runs live in /tmp/mq/runs (kept while the machine is warm); each call packs the run
# directories without the model weights (config, env, log, metrics.jsonl, results.json) and the
# sweep's results.md/csv under $OUT.
set -uo pipefail
step=${1:?usage: scripts/gpu/train.sh probe|sweep SECONDS|bench}
shift
smol=$MQ_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
export MQ_DATA_DIR=$MQ_SHARED_DIR/data
mq=build/mobilequant
runs=/tmp/mq/runs
out=/tmp/mq/out/train-$step
rm -rf "$out"; mkdir -p "$out" "$runs"
run() { echo "+ $*" | tee -a "$out/commands.txt"; "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
calib=(--set "calib.data=$MQ_DATA_DIR/wikitext2/wiki.valid.tokens.txt"
       --set "eval.data=$MQ_DATA_DIR/wikitext2/wiki.test.raw.txt" --set "model=$smol")
case "$step" in
  probe)
    run "$mq" run configs/runs/smollm2.json "${calib[@]}" --set method=mobilequant --set quant=w4a8 \
      --set calib.samples=16 --set train.epochs=2 --set 'eval.tasks=[]' --set "output=$runs/probe-e2e" \
      --force 2>&1 | tail -n 4
    run "$mq" run configs/runs/smollm2.json "${calib[@]}" --set method=omniquant-edge-arl --set quant=w4a8 \
      --set calib.samples=16 --set train.epochs=2 --set 'eval.tasks=[]' --set "output=$runs/probe-bw" \
      --force 2>&1 | tail -n 4
    for r in probe-e2e probe-bw; do
      python3 - "$runs/$r/metrics.jsonl" <<'PY'
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
t = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(m, m[1:]) if a["layer"] == b["layer"]]
t.sort()
print(sys.argv[1], "steps", len(m), "median s/step", t[len(t) // 2] if t else None)
PY
    done
    cp -r "$runs"/probe-* "$out/" && rm -rf "$out"/probe-*/model "$out"/probe-*/checkpoint
    ;;
  sweep)
    secs=${1:?seconds}
    shift
    run timeout --signal=KILL "$secs" "$mq" sweep configs/sweeps/acceptance-smollm2.json "${calib[@]}" \
      --output "$runs/acceptance-smollm2" "$@" > "$out/sweep.log" 2>&1
    echo "sweep exit $?"
    grep -E "^\[sweep\]|^\[run\] (starting|resuming|done)" "$out/sweep.log" | tail -n 20
    mkdir -p "$out/acceptance-smollm2"
    (cd "$runs/acceptance-smollm2" && find . -name model -prune -o -name checkpoint -prune -o -type f -print |
      tar cf - -T - ) | tar xf - -C "$out/acceptance-smollm2"
    cat "$runs/acceptance-smollm2/results.md" 2>/dev/null
    ;;
  bench)
    run scripts/gpu/bench_train.sh "$smol" "$out/bench" "${1:-all}"
    ;;
  *) echo "unknown step '$step'" >&2; exit 2 ;;
esac
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_train_$step.tgz" -C "$out" .
exit 0
