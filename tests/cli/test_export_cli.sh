#!/usr/bin/env bash
# tests/cli/test_export_cli.sh: `mobilequant export` on a real (short) run of stories260K:
# a finished run exports into RUN/export and lints clean; an unfinished run, an existing
# directory without --force, an unknown format are refused with one clear error and a non-zero
# exit, leaving nothing behind; --check names an edited file and exits non-zero; `eval --runtime
# int --compare-device cpu` lines its passes up; and, when the
# project's Python has transformers, the exported hf/ directory loads and runs there.
# Usage: test_export_cli.sh BUILD/mobilequant SHARED_DIR [SOURCE_DIR]
set -u
mq=$1
shared=${MQ_SHARED_DIR:-$2}
src=${3:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stories=$shared/models/stories260K/stories260K.bin
calib=$shared/data/wikitext2/wiki.valid.tokens.txt
if [ ! -f "$stories" ] || [ ! -f "$calib" ]; then
  echo "MQ_SKIP: $stories or $calib absent"
  exit 0
fi
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_error NAME PATTERN CMD...: the command exits non-zero with PATTERN on stderr.
expect_error() {
  local name=$1 pattern=$2; shift 2
  if "$@" >"$tmp/out" 2>"$tmp/err"; then fail "$name: exited 0"; return; fi
  grep -q -- "$pattern" "$tmp/err" || { fail "$name: stderr lacks '$pattern':"; cat "$tmp/err"; }
}

run=$tmp/run
if ! "$mq" run --quiet --set "model=$stories" --set "calib.data=$calib" --set calib.samples=8 \
    --set calib.seqlen=64 --set quant=w4a8 --set method=mobilequant --set train.epochs=1 \
    --set 'eval.tasks=[]' --set "output=$run" 2>"$tmp/run.err"; then
  echo "FAIL: the run failed:"; tail -5 "$tmp/run.err"; exit 1
fi

# A run that did not finish: no results.json.
mkdir -p "$tmp/unfinished"
cp "$run/config.json" "$run/env.json" "$tmp/unfinished/"
cp -r "$run/model" "$tmp/unfinished/model"
expect_error unfinished "did not finish" "$mq" export "$tmp/unfinished"
[ -e "$tmp/unfinished/export" ] && fail "unfinished: an export directory was left behind"

# The finished run: default directory RUN/export, lints clean.
"$mq" export "$run" >"$tmp/out" 2>"$tmp/err" || { fail "export failed:"; cat "$tmp/err"; }
for f in export.json hf/config.json hf/model.safetensors reference/act_dict.json \
         reference/default_qcfg.json aimet/encodings_0.6.1.json aimet/encodings_1.0.0.json; do
  [ -f "$run/export/$f" ] || fail "export: $f missing"
done
"$mq" export --check "$run/export" >"$tmp/out" 2>"$tmp/err" || { fail "--check on a fresh export:"; cat "$tmp/out" "$tmp/err"; }
grep -q OK "$tmp/out" || fail "--check did not say OK"

# The integer runtime on the export, with the fp32 simulation run a second time on the CPU as
# the compare device: that pass must agree with the first on every position, and with the
# runtime exactly as often as the first does (the passes line up window by window).
docs=$shared/data/tinystories/valid.head.txt
if [ -f "$run/export/int/manifest.json" ] && [ -f "$docs" ]; then
  if "$mq" eval -m "$run/export" --runtime int --task docs --data "$docs" --max-length 128 \
      --limit 2 --compare-device cpu -o "$tmp/eval_int.json" >"$tmp/out" 2>"$tmp/err"; then
    python3 - "$tmp/eval_int.json" <<'PY' || fail "eval --runtime int --compare-device cpu: the passes do not line up"
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
d = r["simulated_on_compare_device"]
ok = (d["device"] == "cpu" and d["greedy_agreement_with_cpu_fp32_simulation"] == 1.0
      and d["greedy_agreement_with_integer"] == r["greedy_agreement"]
      and d["values"][0] == r["metrics"][0]["simulated"] and r["positions"] > 0)
print(json.dumps(d), r["greedy_agreement"], r["metrics"][0]["simulated"])
sys.exit(0 if ok else 1)
PY
  else
    fail "eval --runtime int --compare-device cpu:"; tail -5 "$tmp/err"
  fi
  expect_error compare-torch "needs runtime int" "$mq" eval -m "$run/export/hf" --task docs \
    --data "$docs" --compare-device cpu
else
  fail "export: int/manifest.json or $docs missing"
fi

# An existing directory: refused without --force, replaced with it; nothing left beside it.
expect_error exists "already exists" "$mq" export "$run"
"$mq" export "$run" --force --format hf,aimet >/dev/null 2>"$tmp/err" || { fail "--force:"; cat "$tmp/err"; }
[ -e "$run/export/reference" ] && fail "--force --format hf,aimet kept the old reference/"
ls "$run" | grep -q -e '\.partial-' -e '\.old-' && fail "a .partial/.old directory was left in $run"
expect_error format "tflite" "$mq" export "$run" -o "$tmp/x" --format hf,tflite
[ -e "$tmp/x" ] && fail "format: $tmp/x was created"

# An edited file: --check names it and exits non-zero.
sed -i 's/"bitwidth": 8/"bitwidth": 7/' "$run/export/aimet/encodings_0.6.1.json"
if "$mq" export --check "$run/export" >"$tmp/out" 2>"$tmp/err"; then
  fail "--check passed an edited export"
fi
grep -q "\[checksum\] aimet/encodings_0.6.1.json" "$tmp/out" || { fail "--check did not name the edited file:"; cat "$tmp/out"; }
grep -q "\[bitwidth\] aimet/encodings_0.6.1.json" "$tmp/out" || { fail "--check did not name the wrong bit-width:"; cat "$tmp/out"; }

# transformers loads and runs the exported model (when the project's Python has it).
py=${MQ_PYTHON:-$src/.venv/bin/python}
if [ -x "$py" ] && "$py" -c 'import transformers, safetensors.torch' >/dev/null 2>&1; then
  echo "1 5 9 13 17 21" > "$tmp/ids.txt"
  "$py" "$src/tests/oracle/hf_logits.py" "$run/export/hf" "$tmp/ids.txt" "$tmp/logits.safetensors" \
      >"$tmp/py.log" 2>&1 || { fail "transformers cannot run the exported hf/:"; tail -5 "$tmp/py.log"; }
else
  echo "note: no Python with transformers at $py; the transformers load check was skipped"
fi

if [ $fails -eq 0 ]; then echo "PASS: mobilequant export on a stories260K run"; fi
exit $((fails > 0))
