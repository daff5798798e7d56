#!/usr/bin/env bash
# Configures a CMake build directory against the LibTorch of the project's venv.
# Usage: scripts/configure.sh [BUILD_DIR] [extra cmake args...]   (default BUILD_DIR: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}; shift || true
py=${MQ_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || { echo "error: $py not found; run scripts/setup.sh first" >&2; exit 1; }
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" "$@"
