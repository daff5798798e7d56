# experiments/gpu_output.sh: sourced by gpu_sweep.sh and gpu_int_beside.sh (on the GPU
# machine). sweep_output SWEEP.json ARGS... sets
#   output  the sweep's "output" (runs/NAME), or the DIR of -o/--output DIR among ARGS
#   name    output without runs/, '/' as '_' (the name of the packed results)
#   runs    /tmp/mq/<output>, where the runs live on that machine
#   args    ARGS without -o/--output
# and exits 2 when the sweep's output cannot be read or is an absolute path.
sweep_output() {
  local sweep=$1
  shift
  output=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["output"])' "$sweep") ||
    { echo "error: $sweep: cannot read its \"output\"" >&2; exit 2; }
  args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      -o|--output) output=${2:?"$1 needs a directory"}; shift 2 ;;
      --output=*) output=${1#*=}; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  output=${output#/tmp/mq/}
  case "$output" in /*) echo "error: give the output as runs/NAME (it goes under /tmp/mq/)" >&2; exit 2 ;; esac
  name=$(echo "$output" | sed 's|^runs/||; s|/|_|g')
  runs=/tmp/mq/$output
}
