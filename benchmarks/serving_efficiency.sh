#!/usr/bin/env bash
# Server efficiency on this machine: llama-server at 1/4/8 streams of one workload against
# llama-batched-bench at the same shapes (velollm benchmark --engine-ceiling), with the engine also
# measured alone before and after the server run, so the reader sees how much the machine's load moved
# between them. Writes the result JSON and the console log to OUT (default benchmarks/results/cpu).
# Usage: [RUN=r2] benchmarks/serving_efficiency.sh [MODEL] [WORKLOAD]   (default gemma3-270m pp128/tg64)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MODEL=${1:-gemma3-270m}
WORKLOAD=${2:-pp128/tg64}
OUT=${OUT:-benchmarks/results/cpu}
NAME=serving-efficiency-$MODEL${RUN:+-$RUN}  # RUN=r2 names a repeat
pp=${WORKLOAD%%/*}; pp=${pp#pp}; tg=${WORKLOAD##*/tg}
BB=$(velollm llamacpp where --json | python -c "import json,sys; print(json.load(sys.stdin)['programs']['llama-batched-bench'])")
GGUF=$(python -c "from velollm_core.api import resolve_model_path; print(resolve_model_path('$MODEL'))")
engine() {
  echo "\$ $BB -m $GGUF -c $((8 * (pp + tg) + 256)) -npp $pp -ntg $tg -npl 1,4,8 --output-format jsonl"
  "$BB" -m "$GGUF" -c $((8 * (pp + tg) + 256)) -npp "$pp" -ntg "$tg" -npl 1,4,8 --output-format jsonl 2>/dev/null
}
{
  echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "# uptime before: $(uptime)"
  echo "## the engine alone, before"
  engine
  echo "## \$ velollm benchmark --backend llamacpp --model $MODEL --workload $WORKLOAD --concurrency 1,4,8 --iterations 2 --warmup 1 --engine-ceiling --output $OUT/$NAME.json"
  COLUMNS=80 velollm benchmark --backend llamacpp --model "$MODEL" --workload "$WORKLOAD" --concurrency 1,4,8 \
    --iterations 2 --warmup 1 --engine-ceiling --output "$OUT/$NAME.json" 2>&1
  echo "## the engine alone, after"
  engine
  echo "# uptime after: $(uptime)"
} | tee "$OUT/$NAME.txt"
