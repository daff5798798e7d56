#!/usr/bin/env bash
# Checks every experiment config without running anything (run from the repository root):
#   1. `mobilequant sweep FILE --dry-run` for each sweep under experiments/ (the grid resolves:
#      unknown keys, ill-typed values, unknown method names fail here);
#   2. `mobilequant run BASE --set ... --print-config` for each point of each grid, which also
#      loads the quantization preset, and a check that the files the point reads exist (a
#      missing model is a note: the paper models need their weights downloaded first);
#   3. `mobilequant run FILE --print-config` for the paper models' run configs;
#   4. the let-pairs ablation's method files equal configs/methods/mobilequant.json except
#      for description, train.let_pairs and train.let.enabled.
#
#   experiments/check.sh [MOBILEQUANT [SWEEP.json ...]]   (default: build/mobilequant, every sweep)
# Prints one line per file; exits 1 if any check failed.
set -uo pipefail
mq=${1:-build/mobilequant}
[ $# -gt 0 ] && shift
[ -x "$mq" ] || { echo "error: $mq not found or not executable (give the binary)" >&2; exit 2; }
[ -d experiments ] || { echo "error: run from the repository root" >&2; exit 2; }
fail=0

check_sweep() {  # FILE
  local f=$1 n out
  if ! out=$("$mq" sweep "$f" --dry-run 2>&1); then
    echo "FAIL  $f: $(echo "$out" | grep -m1 -i error)"; fail=1; return
  fi
  n=$(echo "$out" | grep -c '^runs/')
  # Every grid point through `run --print-config`, with the files it names.
  if ! out=$(python3 - "$mq" "$f" <<'PY'
import itertools, json, os, subprocess, sys
mq, path = sys.argv[1], sys.argv[2]
s = json.load(open(path))
base = os.path.normpath(os.path.join(os.path.dirname(path), s["base"]))
axes = [[f'{a["key"]}={v if isinstance(v, str) else json.dumps(v)}' for v in a["values"]]
        for a in s["axes"]]
notes, errors = set(), []
for point in itertools.product(*axes):
    cmd = [mq, "run", base] + [x for kv in list(s.get("set", [])) + list(point) for x in ("--set", kv)]
    cmd += ["--print-config"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        errors.append(" ".join(point) + ": " + (r.stderr.strip().splitlines() or ["?"])[-1])
        continue
    c, _ = json.JSONDecoder().raw_decode(r.stdout)
    files = [("calib.data", c["calib"]["data"])] if c["calib"]["data"] else []
    files += [("eval.data", d.split("=", 1)[-1]) for d in c["eval"]["data"]]
    for what, p in files:
        if not os.path.isfile(p):
            errors.append(f"{' '.join(point)}: {what} '{p}' not found")
    if c["method"].endswith(".json") and not os.path.isfile(c["method"]):
        errors.append(f"{' '.join(point)}: method file '{c['method']}' not found")
    if not os.path.exists(c["model"]):
        notes.add(f"model '{c['model']}' not here")
if errors:
    print(f"{len(errors)} problem(s):\n      " + "\n      ".join(errors[:6] + (["..."] if len(errors) > 6 else [])))
    sys.exit(1)
print("; ".join(sorted(notes)))
PY
  ); then
    echo "FAIL  $f ($n runs): $out"; fail=1; return
  fi
  echo "ok    $f: $n runs${out:+ (note: $out)}"
}

check_run() {  # FILE
  local f=$1 out
  if out=$("$mq" run "$f" --print-config 2>&1 >/dev/null); then
    echo "ok    $f: resolves (run --print-config)"
  else
    echo "FAIL  $f: $out"; fail=1
  fi
}

if [ $# -gt 0 ]; then
  for f in "$@"; do check_sweep "$f"; done
  exit $fail
fi
for f in $(find experiments -name '*.json' -not -path '*/methods/*' | sort); do
  check_sweep "$f"
done
for f in configs/runs/tinyllama.json configs/runs/stablelm2.json configs/runs/gemma2b.json; do
  [ -f "$f" ] && check_run "$f"
done
if python3 - <<'PY'
import glob, json, sys
ref = json.load(open("configs/methods/mobilequant.json"))
def strip(m):
    m = json.loads(json.dumps(m))
    m.pop("description", None)
    m["train"].pop("let_pairs", None)
    m["train"]["let"].pop("enabled", None)
    return m
bad = [f for f in sorted(glob.glob("experiments/ablation-let-pairs/methods/*.json"))
       if strip(json.load(open(f))) != strip(ref)]
if bad:
    print("FAIL  let-pairs methods differ from configs/methods/mobilequant.json beyond the pairs:", *bad)
    sys.exit(1)
print("ok    experiments/ablation-let-pairs/methods/*.json: as configs/methods/mobilequant.json but the pairs")
PY
then :; else fail=1; fi
exit $fail
