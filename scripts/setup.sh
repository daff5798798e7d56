#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks and builds mobilequant into build/.
# Idempotent: every step checks first and skips what is already there.
#   1. Debian packages: compiler, CMake/Ninja, SentencePiece, nlohmann-json, CLI11, Catch2, ICU.
#   2. .venv with torch==2.13.0 (CPU wheel: LibTorch is taken from it), the Python oracles and
#      matplotlib for scripts/report.py's plots.
#   3. cmake configure + build (build/mobilequant, build/tests/mq_tests).
# Environment: MQ_VENV (default .venv), MQ_BUILD_DIR (default build), MQ_JOBS (default nproc).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${MQ_VENV:-$root/.venv}
build=${MQ_BUILD_DIR:-$root/build}
jobs=${MQ_JOBS:-$(nproc)}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages ---------------------------------------------------------------
debs=(g++ cmake ninja-build python3-venv libsentencepiece-dev nlohmann-json3-dev
      libcli11-dev catch2 libicu-dev libgemmlowp-dev)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

# 2. Python venv with LibTorch and the oracles ----------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import torch, transformers, gguf, numpy, sentencepiece, safetensors, accelerate' \
    2>/dev/null; then
  say "installing torch==2.13.0 (CPU) and the Python oracles into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$root/scripts/requirements-oracle.txt"
else
  say "venv ready: $("$venv/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
fi
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  say "installing the report plotting requirements (scripts/report.py) into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$root/scripts/requirements-report.txt"
fi

# 3. Configure and build ---------------------------------------------------------------
if [ ! -f "$build/CMakeCache.txt" ]; then
  say "configuring $build"
  MQ_PYTHON="$venv/bin/python" "$root/scripts/configure.sh" "$build" >/dev/null
fi
say "building ($jobs jobs)"
cmake --build "$build" -j"$jobs"
say "done: $build/mobilequant"
