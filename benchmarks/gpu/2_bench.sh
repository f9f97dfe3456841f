#!/usr/bin/env bash
# GPU step 2: benchmark random-weight Llama shapes on the CUDA llama-server, beside llama-bench, and
# the memory estimate against the server's real VRAM use.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
BENCH=$($VELOLLM llamacpp where --json | python3 -c "import json,sys; print(json.load(sys.stdin)['programs']['llama-bench'])")
for m in 1b-random-q4_0 1b-random-q8_0 1b-random-f16 8b-random-q4_0 8b-random-q8_0; do
  $VELOLLM benchmark --backend llamacpp --model $MODELS/llama-$m.gguf --option n_gpu_layers=999 \
    --iterations 3 --suite short_completion --suite medium_completion --suite long_prompt \
    --output "$OUT/r/bench-$m.json" 2>&1 | tail -12
  $BENCH -m $MODELS/llama-$m.gguf -ngl 999 -p 512 -n 128 -r 3 -o md 2>/dev/null | tail -3
done
python3 benchmarks/estimate_vs_server.py --model $MODELS/llama-1b-random-q4_0.gguf --model $MODELS/llama-8b-random-q8_0.gguf \
  --ctx 8192 --kv-types f16,q8_0 --ngl 999 --nvml --output "$OUT/r/estimate-vs-server.json" 2>&1 | tail -20
