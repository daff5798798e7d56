#!/usr/bin/env bash
# Prepares, on this (Debian 12) machine, what the GPU machine needs and cannot fetch
# (it has PyTorch with CUDA, nvcc, cmake and ninja, but no apt and no network):
#   .carry/debs/      the Debian packages of our C++ dependencies (extracted there with dpkg -x)
#   .carry/shared/    stories260K and the evaluation texts from ../shared
#   .carry/model.N    SmolLM2-135M-Instruct's GGUF in parts of at most 16 MiB (one per call:
#                     a part and the ~40 MiB working tree must stay under a call's 64 MiB)
#   .carry/git_revision  the commit of this tree (run prepare.sh again after committing)
# .carry/ is git-ignored; scripts/gpu/run.sh names these paths in each call's carry list.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
carry=$root/.carry
mkdir -p "$carry/debs"
pkgs=(libsentencepiece0 libsentencepiece-dev nlohmann-json3-dev libcli11-dev catch2 libicu72
      libicu-dev libgemmlowp-dev)
if [ "$(ls "$carry/debs" | wc -l)" -lt "${#pkgs[@]}" ]; then
  (cd "$carry/debs" && apt-get download "${pkgs[@]}")
fi
echo "[gpu-prepare] debs: $(du -sh "$carry/debs" | cut -f1)"
# ../shared does not travel: copy the small models and texts the GPU runs read.
shared=${MQ_SHARED_DIR:-$root/../shared}
mkdir -p "$carry/shared"
for f in models/stories260K data/tinystories data/wikitext2 data/ptb; do
  mkdir -p "$carry/shared/$(dirname "$f")"
  cp -r "$shared/$f" "$carry/shared/$(dirname "$f")/"
done
model=${MQ_MODELS_DIR:-$root/models}/SmolLM2-135M-Instruct.Q4_1.gguf
part_bytes=$((16 * 1024 * 1024))
if [ -f "$model" ] && { [ ! -f "$carry/model.sha256" ] ||
     [ "$(stat -c %s "$carry/model.part00" 2>/dev/null || echo 0)" -gt "$part_bytes" ]; }; then
  rm -f "$carry"/model.part*
  split -b "$part_bytes" -d "$model" "$carry/model.part"
  sha256sum "$model" | cut -d' ' -f1 > "$carry/model.sha256"
fi
# The copy on the GPU machine has no history: tell it which commit (and whether edited) it is.
rev=$(git -C "$root" rev-parse HEAD)
git -C "$root" diff --quiet HEAD || rev="$rev+uncommitted"
echo "$rev" > "$carry/git_revision"
ls -la "$carry"
