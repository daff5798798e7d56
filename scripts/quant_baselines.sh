#!/usr/bin/env bash
# The closed-form baselines of one model, end to end: FP, W8A16 / W4A16 / full-W8A8 / W8A8 RTN,
# W8A8 SmoothQuant-Static and SmoothQuant-Edge, each quantized (mobilequant quantize) and
# evaluated the same way (mobilequant eval: WikiText lm-eval word perplexity, WikiText GPTQ
# token perplexity, TinyStories document perplexity). Writes under OUTDIR:
#   commands.txt          every command, in order
#   <row>/                the quantized model directory (not for FP)
#   <row>.eval.json/.md   the evaluation of each row
#   table.md, table.csv   one line per row (scripts/results_table.py)
#
# usage: scripts/quant_baselines.sh MODEL OUTDIR [flags both commands take: --device cuda, --tokenizer F]
#   env: MQ (the binary, default build/mobilequant), MQ_DATA_DIR (default ../shared/data),
#        SAMPLES (calibration windows, default 128), ALPHA (SmoothQuant, default 0.5),
#        ROWS (space-separated subset of the row names below)
set -euo pipefail
model=${1:?usage: scripts/quant_baselines.sh MODEL OUTDIR [flags]}
outdir=${2:?usage: scripts/quant_baselines.sh MODEL OUTDIR [flags]}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
mq=${MQ:-$root/build/mobilequant}
data=${MQ_DATA_DIR:-$root/../shared/data}
samples=${SAMPLES:-128}
alpha=${ALPHA:-0.5}
rows=${ROWS:-"fp w8a16-rtn w4a16-rtn full-w8a8-rtn w8a8-rtn w8a8-smoothquant-static w8a8-smoothquant-edge"}
mkdir -p "$outdir"
cmds="$outdir/commands.txt"
: > "$cmds"
run() { echo "$*" >> "$cmds"; "$@"; }

evaluate() {  # evaluate ROW MODEL_OR_DIR
  run "$mq" eval -m "$2" --task wikitext --task wikitext-gptq --task docs \
    --data wikitext="$data/wikitext2/wiki.test.raw.txt" \
    --data wikitext-gptq="$data/wikitext2/wiki.test.raw.txt" \
    --data docs="$data/tinystories/valid.head.txt" \
    -o "$outdir/$1.eval.json" "${flags[@]}" > "$outdir/$1.eval.md"
}

flags=("$@")
for row in $rows; do
  echo "== $row" >&2
  if [ "$row" = fp ]; then
    evaluate fp "$model"
    continue
  fi
  case "$row" in
    *-rtn) quant=${row%-rtn}; method=rtn ;;
    *-smoothquant-static) quant=${row%-smoothquant-static}; method=smoothquant-static ;;
    *-smoothquant-edge) quant=${row%-smoothquant-edge}; method=smoothquant-edge ;;
    *) echo "unknown row '$row'" >&2; exit 2 ;;
  esac
  run "$mq" quantize -m "$model" --quant "$quant" --method "$method" --alpha "$alpha" \
    --calib "$data/wikitext2/wiki.valid.tokens.txt" --samples "$samples" \
    --stats-cache "$outdir/stats" -o "$outdir/$row" "${flags[@]}"
  evaluate "$row" "$outdir/$row"
done
python3 "$root/scripts/results_table.py" "$outdir" $rows
