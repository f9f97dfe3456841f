#!/usr/bin/env bash
# GPU step 3: speculative decoding speedup vs (synthetic) acceptance, 3B-shape target + 1B draft;
# then the llama.cpp proposal, its verification, and the llama-bench sweep on the 8B Q4_0 shape.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
timeout 300 python3 benchmarks/speculative_synthetic.py --target $MODELS/llama-3b-random-q8_0.gguf \
  --draft $MODELS/llama-1b-random-q4_0.gguf --acceptance 0.5,0.7,0.75,0.8,0.9 --draft-max 16 --iterations 3 \
  --option n_gpu_layers=999 --option server_args="-ngld 999" --output "$OUT/r/spec-synthetic.json" 2>&1 | grep -v "^\s*$" | tail -8
M=$MODELS/llama-8b-random-q4_0.gguf
timeout 60 $VELOLLM optimize --backend llamacpp --model $M --format json > "$OUT/r/proposal-8b.json" 2>&1; head -c 1500 "$OUT/r/proposal-8b.json"
timeout 200 $VELOLLM optimize --backend llamacpp --model $M --verify > "$OUT/r/verify-8b.txt" 2>&1; tail -25 "$OUT/r/verify-8b.txt"
timeout 150 python3 benchmarks/sweep_llamacpp.py --model $M --output "$OUT/r/sweep-8b.json" > "$OUT/r/sweep-8b.txt" 2>&1; tail -25 "$OUT/r/sweep-8b.txt"
