#!/usr/bin/env bash
# Downloads a Hugging Face model checkpoint with curl: config.json, the tokenizer files and the
# *.safetensors weights (with their index), which is what `mobilequant` reads from a model
# directory. For users with network access; nothing here needs Python packages.
#
#   scripts/download_hf.sh REPO [DEST] [--revision REV] [--include GLOB]... [--list]
#
#   REPO          owner/name on the Hub, e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0
#   DEST          target directory (default: ${MQ_MODELS_DIR:-<repo root>/models}/<name>)
#   --revision    branch, tag or commit (default: main)
#   --include     also fetch top-level files matching GLOB (repeatable), e.g. '*.json'
#   --list        print what would be fetched, with sizes, and exit
#
# Environment: HF_TOKEN (sent as a bearer token: gated models such as google/gemma-2b need
# it, after accepting the licence on the model's page), HF_ENDPOINT (default
# https://huggingface.co, for mirrors). Needs curl and python3 (to read the file list).
#
# Resumable: each file is fetched into FILE.part with `curl -C -` and renamed when its size
# (and, for LFS files, its sha256) matches what the Hub lists; run it again after an
# interruption. Files already complete are skipped. Only top-level files are fetched.
#
# Examples (the paper's three models; the configs in configs/runs/ expect these paths):
#   scripts/download_hf.sh TinyLlama/TinyLlama-1.1B-Chat-v1.0 models/TinyLlama-1.1B-Chat-v1.0
#   scripts/download_hf.sh stabilityai/stablelm-2-1_6b models/stablelm-2-1_6b
#   HF_TOKEN=hf_... scripts/download_hf.sh google/gemma-2b models/gemma-2b
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "download_hf: error: $*" >&2; exit 1; }

repo="" dest="" rev=main list=0
includes=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --revision) [ $# -ge 2 ] || die "--revision needs a value"; rev=$2; shift 2 ;;
    --revision=*) rev=${1#*=}; shift ;;
    --include) [ $# -ge 2 ] || die "--include needs a glob"; includes+=("$2"); shift 2 ;;
    --include=*) includes+=("${1#*=}"); shift ;;
    --list) list=1; shift ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      if [ -z "$repo" ]; then repo=$1
      elif [ -z "$dest" ]; then dest=$1
      else die "unexpected argument '$1' (see --help)"; fi
      shift ;;
  esac
done
[ -n "$repo" ] || { usage >&2; exit 2; }
[[ "$repo" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
  die "REPO must be owner/name (e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0), got '$repo'"
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found (it reads the Hub's file list)"

root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$dest" ] || dest=${MQ_MODELS_DIR:-$root/models}/${repo#*/}
endpoint=${HF_ENDPOINT:-https://huggingface.co}
endpoint=${endpoint%/}
auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")

# The file list, with sizes and LFS sha256 (GET /api/models/REPO/revision/REV?blobs=true).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rev_q=${rev//\//%2F}  # a branch such as refs/pr/1 goes into the URL encoded
api="$endpoint/api/models/$repo/revision/$rev_q?blobs=true"
code=$(curl -sS -L ${auth[@]+"${auth[@]}"} -o "$tmp/info.json" -w '%{http_code}' "$api") ||
  die "cannot reach $endpoint (no network, or a proxy is needed: curl honours https_proxy)"
case "$code" in
  200) ;;
  401|403) die "$repo: access denied (HTTP $code). Gated model: accept its licence at $endpoint/$repo and set HF_TOKEN${HF_TOKEN:+ (the token given was refused)}" ;;
  404) die "$repo at revision '$rev': not found (HTTP 404); check the name and --revision (a private repository needs HF_TOKEN)" ;;
  *) die "$api: HTTP $code: $(head -c 300 "$tmp/info.json")" ;;
esac

# One line per file to fetch: NAME<TAB>SIZE<TAB>SHA256 (size and sha256 may be empty).
python3 - "$tmp/info.json" ${includes[@]+"${includes[@]}"} > "$tmp/files.tsv" <<'PY' ||
import fnmatch, json, sys
info = json.load(open(sys.argv[1]))
extra = sys.argv[2:]
wanted = ["config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
          "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
          "model.safetensors.index.json", "*.safetensors"] + extra
for s in info.get("siblings", []):
    name = s.get("rfilename", "")
    if "/" in name or not any(fnmatch.fnmatch(name, w) for w in wanted):
        continue
    lfs = s.get("lfs") or {}
    size = lfs.get("size", s.get("size", ""))
    print(f"{name}\t{size}\t{lfs.get('sha256', '')}")
PY
  die "cannot read the file list of $repo (unexpected answer from $api)"
grep -q '\.safetensors	' "$tmp/files.tsv" ||
  die "$repo@$rev has no top-level *.safetensors (mobilequant does not read pytorch_model.bin); files listed: $(python3 -c 'import json,sys; print(" ".join(s["rfilename"] for s in json.load(open(sys.argv[1])).get("siblings", [])))' "$tmp/info.json" | head -c 400)"
grep -q '^config.json	' "$tmp/files.tsv" || die "$repo@$rev has no config.json"

human() { awk -v b="${1:-0}" 'BEGIN { split("B KiB MiB GiB TiB", u); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ } printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i] }'; }
total=$(awk -F'\t' '{ s += $2 } END { print s + 0 }' "$tmp/files.tsv")
echo "$repo@$rev -> $dest: $(wc -l < "$tmp/files.tsv") files, $(human "$total")"
if [ "$list" = 1 ]; then
  while IFS=$'\t' read -r name size sha; do printf '  %-40s %12s\n' "$name" "$(human "$size")"; done < "$tmp/files.tsv"
  exit 0
fi

mkdir -p "$dest" || die "cannot create $dest"
sha_of() { if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi; }
filesize() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }
while IFS=$'\t' read -r name size sha; do
  target=$dest/$name
  if [ -f "$target" ] && { [ -z "$size" ] || [ "$(filesize "$target")" = "$size" ]; }; then
    echo "  $name: present"; continue
  fi
  part=$target.part
  url="$endpoint/$repo/resolve/$rev_q/$name"
  have=0; [ -f "$part" ] && have=$(filesize "$part")
  if [ -n "$size" ] && [ "$have" -gt "$size" ]; then rm -f "$part"; have=0; fi
  if [ -z "$size" ] || [ "$have" != "$size" ]; then
    if [ "$have" -gt 0 ]; then echo "  $name: $(human "$size"), resuming at $(human "$have")"
    else echo "  $name: $(human "$size")"; fi
    # -C -: continue from the .part file's length; --retry for flaky connections.
    if ! curl -# -fL --retry 5 --retry-delay 3 -C - ${auth[@]+"${auth[@]}"} -o "$part" "$url"; then
      code=$(curl -s -L -r 0-0 ${auth[@]+"${auth[@]}"} -o /dev/null -w '%{http_code}' "$url" || true)
      case "$code" in
        401|403) die "$name: access denied (HTTP $code). Gated model: accept its licence at $endpoint/$repo and set HF_TOKEN" ;;
        *) die "$name: download failed (HTTP $code); run the same command again to resume" ;;
      esac
    fi
  fi
  if [ -n "$size" ] && [ "$(filesize "$part")" != "$size" ]; then
    die "$name: got $(filesize "$part") bytes, expected $size; run again to resume (or delete $part)"
  fi
  if [ -n "$sha" ]; then
    got=$(sha_of "$part")
    [ "$got" = "$sha" ] || { rm -f "$part"; die "$name: sha256 $got, expected $sha; the partial file was removed, run again"; }
  fi
  mv "$part" "$target"
done < "$tmp/files.tsv"
[ -f "$dest/tokenizer.model" ] ||
  echo "note: $repo has no tokenizer.model; mobilequant reads a SentencePiece tokenizer.model from a model directory (see experiments/paper-models/README.md)" >&2
echo "done: $dest"
