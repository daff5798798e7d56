#!/usr/bin/env bash
# Which activation site breaks "full W8A8"? Starting from the paper's W8A8 preset (RTN), lower
# one of the six sites it keeps at 16 bits to 8 bits at a time, and evaluate each variant the
# same way (WikiText GPTQ token perplexity, first LIMIT windows), beside W8A8 and full W8A8.
#
# usage: scripts/full_w8a8_ablation.sh MODEL OUTDIR [flags both commands take: --device cuda]
#   env: MQ (binary), MQ_DATA_DIR, SAMPLES (calibration windows, default 32), LIMIT (default 16)
set -euo pipefail
model=${1:?usage: scripts/full_w8a8_ablation.sh MODEL OUTDIR [flags]}
outdir=${2:?usage: scripts/full_w8a8_ablation.sh MODEL OUTDIR [flags]}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
mq=${MQ:-$root/build/mobilequant}
data=${MQ_DATA_DIR:-$root/../shared/data}
samples=${SAMPLES:-32}
limit=${LIMIT:-16}
mkdir -p "$outdir"
: > "$outdir/commands.txt"
run() { echo "$*" >> "$outdir/commands.txt"; "$@"; }
sites="input_layernorm.input post_attention_layernorm.input self_attn.qk_bmm.output self_attn.pv_bmm.input self_attn.o_proj.output mlp.w2.output"
variant() {  # variant NAME PRESET [--quant-set ...]
  local name=$1 preset=$2
  shift 2
  run "$mq" quantize -m "$model" --quant "$preset" "$@" --calib "$data/wikitext2/wiki.valid.tokens.txt" \
    --samples "$samples" --stats-cache "$outdir/stats" -o "$outdir/$name" "${flags[@]}" 2>/dev/null >/dev/null
  run "$mq" eval -m "$outdir/$name" --task wikitext-gptq --data "$data/wikitext2/wiki.test.raw.txt" \
    --limit "$limit" -o "$outdir/$name.eval.json" "${flags[@]}" 2>/dev/null > "$outdir/$name.eval.md"
  rm -f "$outdir/$name/model.safetensors"
  printf '| %s | %s |\n' "$name" "$(grep token_perplexity "$outdir/$name.eval.md" | cut -d'|' -f5 | tr -d ' ')"
}
flags=("$@")
{
  echo "| variant (W8A8 RTN, one site lowered to 8 bits) | WikiText token ppl (GPTQ, first $limit windows) |"
  echo "|---|---:|"
  variant w8a8 w8a8
  for s in $sites; do variant "8bit-$s" w8a8 --quant-set "activations.$s.bits=8"; done
  variant full-w8a8 full-w8a8
} | tee "$outdir/table.md"
