#!/usr/bin/env bash
# GPU step 4: the llama.cpp proposal, its verification and the llama-bench sweep on the 8B Q4_0 shape
# (H200); then the mis-set case: CPU-only inference in a process limited to 4 of the 16 CPUs
# (taskset, as a container's cpuset would), where llama.cpp's default -t counts every core.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
M=$MODELS/llama-8b-random-q4_0.gguf
for part in ${PARTS:-verify sweep misset}; do case $part in
verify) timeout 60 $VELOLLM optimize --backend llamacpp --model $M --format json > "$OUT/r/proposal-8b.json" 2>&1
  timeout 240 $VELOLLM optimize --backend llamacpp --model $M --verify > "$OUT/r/verify-8b.txt" 2>&1; tail -22 "$OUT/r/verify-8b.txt" ;;
sweep) timeout 200 python3 benchmarks/sweep_llamacpp.py --model $M --threads 16 --ubatch 512,2048 --fa off,on --ctk f16,q8_0 \
    --reps 2 --rounds 3 --output "$OUT/r/sweep-8b.json" > "$OUT/r/sweep-8b.txt" 2>&1; tail -20 "$OUT/r/sweep-8b.txt" ;;
misset) M1=$MODELS/llama-1b-random-q4_0.gguf
  CUDA_VISIBLE_DEVICES= taskset -c 0-3 $VELOLLM optimize --backend llamacpp --model $M1 > "$OUT/r/misset-proposal.txt" 2>&1
  grep -E -- "-t |threads|CPU" "$OUT/r/misset-proposal.txt" | head -5
  CUDA_VISIBLE_DEVICES= timeout 240 taskset -c 0-3 python3 benchmarks/sweep_llamacpp.py --model $M1 --threads 2,4,8,16 \
    --ubatch 512 --fa on --ctk f16 --n-prompt 256 --n-gen 32 --reps 1 --rounds 3 --output "$OUT/r/sweep-misset.json" \
    > "$OUT/r/sweep-misset.txt" 2>&1; tail -20 "$OUT/r/sweep-misset.txt" ;;
esac; done
