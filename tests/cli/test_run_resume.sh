#!/usr/bin/env bash
# tests/cli/test_run_resume.sh: a `mobilequant run` killed (SIGKILL) at a random point after
# its first checkpoint and started again with --resume ends with the same quantized model, byte
# for byte, as a run never interrupted: end to end (checkpoints every 2 steps) and block-wise
# (checkpoints per layer), on stories260K on the CPU.
# Usage: test_run_resume.sh BUILD/mobilequant SHARED_DIR
set -u
mq=$1
shared=${MQ_SHARED_DIR:-$2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stories=$shared/models/stories260K/stories260K.bin
calib=$shared/data/wikitext2/wiki.valid.tokens.txt
if [ ! -f "$stories" ] || [ ! -f "$calib" ]; then
  echo "MQ_SKIP: $stories or $calib absent"
  exit 0
fi
fails=0
common=(--quiet --set "model=$stories" --set "calib.data=$calib" --set calib.samples=16
        --set calib.seqlen=128 --set quant=w4a8 --set 'eval.tasks=[]')

for method in mobilequant omniquant-edge-arl; do
  args=("${common[@]}" --set "method=$method" --set train.epochs=24 --set train.checkpoint_every=2)
  if ! "$mq" run "${args[@]}" --set "output=$tmp/$method-ref" 2>"$tmp/err"; then
    echo "FAIL: $method: the uninterrupted run failed:"; tail -5 "$tmp/err"; fails=$((fails + 1)); continue
  fi
  cut=$tmp/$method-cut
  "$mq" run "${args[@]}" --set "output=$cut" 2>"$tmp/err-cut" &
  pid=$!
  # Wait for the first checkpoint, then kill at a random point up to 0.4 s later.
  for _ in $(seq 1 3000); do
    [ -n "$(ls -A "$cut/checkpoint" 2>/dev/null)" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.02
  done
  sleep "0.$(printf '%03d' $((RANDOM % 400)))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  if [ -f "$cut/results.json" ]; then
    echo "FAIL: $method: the run finished before it could be killed (make it longer)"
    fails=$((fails + 1)); continue
  fi
  if ! "$mq" run "${args[@]}" --set "output=$cut" --resume 2>"$tmp/err-resume"; then
    echo "FAIL: $method: the resumed run failed:"; tail -5 "$tmp/err-resume"; fails=$((fails + 1)); continue
  fi
  grep -q "resum" "$tmp/err-resume" || { echo "FAIL: $method: --resume did not say it resumed"; fails=$((fails + 1)); }
  for f in model/quantizers.safetensors model/model.safetensors; do
    if ! cmp -s "$tmp/$method-ref/$f" "$cut/$f"; then
      echo "FAIL: $method: $f differs between the uninterrupted and the killed-and-resumed run"
      fails=$((fails + 1))
    fi
  done
  # metrics.jsonl holds each step once, in order.
  if ! python3 - "$cut/metrics.jsonl" "$tmp/$method-ref/metrics.jsonl" <<'PY'
import json, sys
cut = [json.loads(l) for l in open(sys.argv[1])]
ref = [json.loads(l) for l in open(sys.argv[2])]
key = lambda r: (r["layer"], r["step"])
assert [key(r) for r in cut] == [key(r) for r in ref], "steps differ"
assert [r["loss"] for r in cut] == [r["loss"] for r in ref], "losses differ"
PY
  then
    echo "FAIL: $method: metrics.jsonl of the resumed run differs from the uninterrupted one"
    fails=$((fails + 1))
  fi
  # Resuming with another config is refused, naming the key.
  if "$mq" run "${args[@]}" --set "output=$cut" --set train.epochs=3 --resume 2>"$tmp/err-other"; then
    echo "FAIL: $method: --resume with another config was accepted"; fails=$((fails + 1))
  elif ! grep -q "train.epochs" "$tmp/err-other"; then
    echo "FAIL: $method: --resume with another config did not name train.epochs:"; cat "$tmp/err-other"
    fails=$((fails + 1))
  fi
done
[ $fails -eq 0 ] && echo "killed-and-resumed runs equal uninterrupted ones byte for byte"
exit $((fails > 0))
