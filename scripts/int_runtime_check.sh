#!/usr/bin/env bash
# The integer runtime against the simulation, on a real model (issue 5's acceptance figures):
# for W8A8 and W4A8, MobileQuant (briefly trained) and SmoothQuant-Edge (closed form):
#   mobilequant run     -> a quantized model
#   mobilequant export  -> hf, reference, int, onnx (the export lints itself)
#   mobilequant eval --runtime int  -> WikiText and TinyStories perplexity of the simulation and
#                         of the integer runtime on the same windows, and their greedy agreement
# then `bench int` on the first export. Everything lands in OUT/<preset>-<method>/ with the
# exact commands in OUT/commands.txt and a summary table in OUT/summary.md.
#
#   scripts/int_runtime_check.sh stories260k OUT [DEVICE]
#   scripts/int_runtime_check.sh smollm2 OUT [DEVICE]      (DEVICE: where training runs; cpu)
#
# Environment: MQ_BIN (default build/mobilequant), MQ_SHARED_DIR (default ../shared),
# MQ_EVAL_LIMIT (documents per task, default 40), MQ_EVAL_MAX_LENGTH (default 512),
# MQ_TRAIN_EPOCHS / MQ_CALIB_SAMPLES (MobileQuant's short schedule), MQ_THREADS (0: all),
# MQ_QUANTS / MQ_METHODS (subsets, e.g. to split the work over calls; finished ones are kept),
# MQ_BENCH (0: skip `bench int`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
which=${1:?usage: scripts/int_runtime_check.sh stories260k|smollm2 OUT [DEVICE]}
out=${2:?output directory}
device=${3:-cpu}
mq=${MQ_BIN:-$root/build/mobilequant}
shared=${MQ_SHARED_DIR:-$root/../shared}
limit=${MQ_EVAL_LIMIT:-40}
maxlen=${MQ_EVAL_MAX_LENGTH:-512}
threads=${MQ_THREADS:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
case "$which" in
  stories260k)
    cfg=$root/configs/runs/stories260k.json
    model=$shared/models/stories260K/stories260K.bin
    epochs=${MQ_TRAIN_EPOCHS:-2}; samples=${MQ_CALIB_SAMPLES:-32} ;;
  smollm2)
    cfg=$root/configs/runs/smollm2.json
    model=${MQ_SMOLLM2:-$shared/models/SmolLM2-135M-Instruct.Q4_1.gguf}
    [ -f "$model" ] || model=$root/models/SmolLM2-135M-Instruct.Q4_1.gguf
    epochs=${MQ_TRAIN_EPOCHS:-2}; samples=${MQ_CALIB_SAMPLES:-32} ;;
  *) echo "unknown model '$which' (stories260k or smollm2)" >&2; exit 2 ;;
esac
[ -e "$model" ] || { echo "model $model not found" >&2; exit 1; }
data=$shared/data
log() { echo "+ $*" >> "$out/commands.txt"; echo "+ $*" >&2; "$@"; }
touch "$out/commands.txt"
echo "# $(date -u +%FT%TZ) git ${MQ_GIT_REVISION:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo ?)}" >> "$out/commands.txt"

first_export=""
quants=${MQ_QUANTS:-w8a8 w4a8}
methods=${MQ_METHODS:-mobilequant smoothquant-edge}
for quant in $quants; do
  for method in $methods; do
    name=$quant-$method
    run=$out/runs/$name
    mkdir -p "$out/$name"
    log "$mq" run "$cfg" --set "model=$model" --set "quant=$quant" --set "method=$method" \
      --set "device=$device" --set "calib.samples=$samples" --set "train.epochs=$epochs" \
      --set "calib.data=$data/wikitext2/wiki.valid.tokens.txt" --set 'eval.tasks=[]' \
      --set "output=$run" --force > "$out/$name.run.log" 2>&1
    log "$mq" export "$run" -o "$out/$name/export" --format hf,reference,int,onnx --force \
      > "$out/$name.export.log" 2>&1
    [ -n "$first_export" ] || first_export=$out/$name/export
    log "$mq" eval -m "$out/$name/export" --runtime int --threads "$threads" \
      --task wikitext --task docs --data "wikitext=$data/wikitext2/wiki.test.raw.txt" \
      --data "docs=$data/tinystories/valid.head.txt" --limit "$limit" --max-length "$maxlen" \
      -o "$out/$name/eval_int.json" > "$out/$name/eval_int.md" 2> "$out/$name.eval.log"
    rm -rf "$run/model" "$run/checkpoint"
  done
done
if [ "${MQ_BENCH:-1}" != 0 ]; then
  log "$mq" bench int -m "$first_export" --seqlens 128,256,512 --threads "$threads" \
    -o "$out/bench_int.json" > "$out/bench_int.md" 2> "$out/bench_int.log"
fi

{
  echo "| model | preset | method | task | metric | simulated | integer | Δ | greedy agreement | simulated fp64 | fp64 vs fp32 agreement | positions |"
  echo "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
  for quant in w8a8 w4a8; do
    for method in mobilequant smoothquant-edge; do
      [ -f "$out/$quant-$method/eval_int.md" ] || continue
      tail -n +3 "$out/$quant-$method/eval_int.md" | sed "s/^| /| $which | $quant | $method | /"
    done
  done
  echo
  [ -f "$out/bench_int.md" ] && cat "$out/bench_int.md"
} > "$out/summary.md"
cat "$out/summary.md"
