#!/usr/bin/env bash
# tests/cli/test_cli_errors.sh: bad input to the CLI gives one clear error line and a
# non-zero exit, never a crash. Usage: test_cli_errors.sh BUILD/mobilequant SHARED_DIR
set -u
mq=$1
shared=${MQ_SHARED_DIR:-$2}  # the GPU machine keeps the shared folder elsewhere
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

# expect_error DESCRIPTION EXPECTED_SUBSTRING COMMAND...: a non-zero exit that is not a signal
# (1: mq::Error; CLI11 usage errors have their own codes) and the substring on stderr.
expect_error() {
  local what=$1 want=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ge 1 ] && [ $rc -lt 128 ] && grep -qF -- "$want" "$tmp/err"; then
    passes=$((passes + 1))
  else
    fails=$((fails + 1))
    echo "FAIL: $what: exit $rc, stderr:"; sed 's/^/    /' "$tmp/err" | head -5
    echo "    (expected a non-zero exit below 128 (no crash) and '$want')"
  fi
}

stories=$shared/models/stories260K/stories260K.bin
: > "$tmp/empty.txt"
head -c 1000 "$stories" > "$tmp/cut.bin" 2>/dev/null || true
printf 'GGUF\x02\x00\x00\x00' > "$tmp/old.gguf"
mkdir -p "$tmp/hf" && echo '{"model_type": "gpt2"}' > "$tmp/hf/config.json"

expect_error "missing model" "no such file" "$mq" eval -m "$tmp/nope.bin" --task docs \
  --data "$shared/data/tinystories/valid.head.txt"
expect_error "unknown format" "unknown format" "$mq" info -m "$tmp/empty.txt"
expect_error "truncated llama2.c" "cut.bin" "$mq" info -m "$tmp/cut.bin"
expect_error "old GGUF version" "old.gguf" "$mq" info -m "$tmp/old.gguf"
expect_error "unsupported architecture" "gpt2" "$mq" info -m "$tmp/hf"
expect_error "bad device" "--device" "$mq" generate -m "$stories" --device tpu
expect_error "bad dtype" "--dtype" "$mq" generate -m "$stories" --dtype int3
expect_error "unknown flag" "--frobnicate" "$mq" eval -m "$stories" --task docs --frobnicate
expect_error "unknown task" "--task" "$mq" eval -m "$stories" --task lambada
expect_error "layer-error without a reference" "--reference MODEL" "$mq" eval -m "$stories" \
  --task layer-error
if [ -f "$stories" ]; then
  expect_error "empty data file" "empty.txt" "$mq" eval -m "$stories" --task docs --data "$tmp/empty.txt"
  expect_error "missing data file" "missing.txt" "$mq" eval -m "$stories" --task docs --data "$tmp/missing.txt"
fi
# quantize: presets, overrides, calibration text, output.
echo 'tiny text' > "$tmp/short.txt"
echo '{"weights": {"default": {"bits": 8}}, "activations": {"mlp.w9.output": {"bits": 8}}}' > "$tmp/q.json"
expect_error "unknown preset" "w3a3" "$mq" quantize -m "$stories" --quant w3a3 -o "$tmp/q"
expect_error "unknown site in a quant file" "mlp.w9.output" "$mq" quantize -m "$stories" --quant "$tmp/q.json" -o "$tmp/q"
expect_error "unknown method" "--method" "$mq" quantize -m "$stories" --method gptq -o "$tmp/q"
expect_error "bad alpha" "alpha" "$mq" quantize -m "$stories" --alpha 2 -o "$tmp/q"
expect_error "unknown --set key" "calib_sample" "$mq" quantize -m "$stories" --set calib_sample=3 -o "$tmp/q"
expect_error "missing output" "--output" "$mq" quantize -m "$stories"
if [ -f "$stories" ]; then
  expect_error "calibration text too short" "short.txt" "$mq" quantize -m "$stories" --calib "$tmp/short.txt" -o "$tmp/q"
  [ -e "$tmp/q" ] && { echo "FAIL: a failed quantize left $tmp/q behind"; fails=$((fails + 1)); }
fi
# mobilequant run: bad configs fail before any long work, and leave no run directory behind.
export MQ_DATA_DIR=$shared/data  # the default calibration and evaluation texts
r=(run --quiet --set "output=$tmp/run")
echo '{"model": "x", "train": {"epoch": 3}}' > "$tmp/typo.json"
expect_error "run: config key typo" "unknown key 'epoch'" "$mq" run "$tmp/typo.json"
expect_error "run: --set key typo" "unknown key 'samples'" "$mq" "${r[@]}" --set model="$stories" --set train.samples=3
expect_error "run: unknown method" "known methods" "$mq" "${r[@]}" --set model="$stories" --set method=mobilequnat
expect_error "run: missing model" "does not exist" "$mq" "${r[@]}" --set model="$tmp/nope.bin"
expect_error "run: missing calibration text" "calib.data" "$mq" "${r[@]}" --set model="$stories" \
  --set calib.data="$tmp/nope.txt"
expect_error "run: missing eval data" "eval.data" "$mq" "${r[@]}" --set model="$stories" \
  --set eval.data="$tmp/nope.txt"
expect_error "run: ARL with 16-bit activations" "16 bits" "$mq" "${r[@]}" --set model="$stories" \
  --set quant=w8a16 --set method=mobilequant
expect_error "run: block-wise with a logits loss" "block-wise" "$mq" "${r[@]}" --set model="$stories" \
  --set method=omniquant-edge --set train.loss=kl
if [ -f "$stories" ]; then
  expect_error "run: fewer windows than samples" "distinct windows" "$mq" "${r[@]}" --set model="$stories" \
    --set calib.data="$shared/data/tinystories/valid.head.txt" --set calib.samples=20000 --set calib.seqlen=256
fi
[ -e "$tmp/run" ] && { echo "FAIL: a failed run left $tmp/run behind"; fails=$((fails + 1)); }
echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
