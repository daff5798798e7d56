#!/usr/bin/env bash
# The test command: sets up a fresh machine (scripts/setup.sh), fetches SmolLM2-135M
# (skipped tests say so if that fails), then runs the default ctest labels.
#   scripts/test.sh            unit + model tests (the default; what CI runs)
#   scripts/test.sh heavy      the [heavy] tests only
#   scripts/test.sh cuda-emu   the fused CUDA kernels' source run on the CPU (tests/cuda_emu/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MQ_BUILD_DIR:-$root/build}
labels=${1:-"unit|model"}
"$root/scripts/setup.sh"
"$root/scripts/fetch_smollm2.sh" || echo "[test] SmolLM2 could not be fetched: its tests will be skipped"
cd "$build"
ctest -L "$labels" --output-on-failure -j"${MQ_TEST_JOBS:-2}"
