#!/usr/bin/env bash
# Runs ON the GPU machine, from the repository root (scripts/gpu/README.md says how to call it).
#   scripts/gpu/remote.sh debs       extract the carried .carry/debs/*.deb into /tmp/mq/deps (each once)
#   scripts/gpu/remote.sh setup      the same, then build with CUDA in /tmp/mq/build
#   scripts/gpu/remote.sh model      append the carried .carry/model.partNN to /tmp/mq/models (checks sha256 when whole)
#   scripts/gpu/remote.sh run CMD... run CMD with build/, models/ and the libraries in place
# /tmp survives between calls while the machine stays warm; every call is idempotent.
set -euo pipefail
root=$(pwd)
state=/tmp/mq
mkdir -p "$state/models"
deps=$state/deps
lib=$deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
export MQ_MODELS_DIR=$state/models
export MQ_PYTHON=${MQ_PYTHON:-$(command -v python3)}
export MQ_SOURCE_DIR=$root
export MQ_SHARED_DIR=$state/shared
# The copy here has no usable history: the commit comes from .carry/git_revision (prepare.sh).
export MQ_GIT_REVISION=$(cat .carry/git_revision 2>/dev/null || echo "unknown (no .carry/git_revision)")
[ -d .carry/shared ] && { rm -rf "$state/shared"; cp -r .carry/shared "$state/shared"; }

# Extracts each carried .carry/debs/*.deb once (a marker per package file), so the packages can
# arrive over several calls when the tree and all of them exceed a call's 64 MiB.
extract_debs() {
  mkdir -p "$deps/.extracted"
  for d in .carry/debs/*.deb; do
    [ -f "$d" ] || continue
    [ -f "$deps/.extracted/$(basename "$d")" ] && continue
    dpkg -x "$d" "$deps" && touch "$deps/.extracted/$(basename "$d")"
  done
}

case "${1:-}" in
  debs)
    extract_debs
    echo "[gpu] packages extracted so far: $(ls "$deps/.extracted" | wc -l)"
    ;;
  setup)
    extract_debs
    # The .so links of the -dev packages point at absolute /usr paths: repoint them.
    for l in "$lib"/*.so; do
      [ -L "$l" ] && ln -sf "$(basename "$(readlink "$l")")" "$l"
    done
    torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
    cmake -S "$root" -B "$state/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DMQ_DEPS_PREFIX="$deps/usr" \
      -DCMAKE_CUDA_ARCHITECTURES=90 >"$state/configure.log" 2>&1 || { tail -40 "$state/configure.log"; exit 1; }
    cmake --build "$state/build" -j16 2>&1 | tail -5
    ln -sfn "$state/build" "$root/build"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
    ;;
  model)
    name=SmolLM2-135M-Instruct.Q4_1.gguf
    for p in .carry/model.part*; do
      [ -f "$p" ] || continue
      cp "$p" "$state/models/$(basename "$p")"
    done
    want=$(cat .carry/model.sha256 2>/dev/null || cat "$state/models/model.sha256" 2>/dev/null || echo "")
    [ -f .carry/model.sha256 ] && cp .carry/model.sha256 "$state/models/model.sha256"
    cat "$state/models"/model.part* > "$state/models/$name.tmp"
    got=$(sha256sum "$state/models/$name.tmp" | cut -d' ' -f1)
    if [ -n "$want" ] && [ "$got" = "$want" ]; then
      mv "$state/models/$name.tmp" "$state/models/$name"; echo "[gpu] model complete: $name"
    else
      echo "[gpu] model incomplete so far ($(ls "$state/models"/model.part* | wc -l) parts)"
    fi
    ;;
  run)
    shift
    ln -sfn "$state/build" "$root/build"
    "$@"
    ;;
  *)
    echo "usage: scripts/gpu/remote.sh debs|setup|model|run CMD..." >&2; exit 2 ;;
esac
