#!/usr/bin/env bash
# GPU step 5 (issue 14): telemetry on the CUDA llama-server with the 8B shape made by 1_setup.sh.
#   energy:   tokens per joule (NVML total energy counter; decode and end to end) for two quantizations
#             (QUANTS, default "q4_0 f16") at 1 and 8 concurrent streams of pp512/tg128, fixed length,
#             each level >= 8 s; peak VRAM above the idle baseline vs `velollm estimate` for the same
#             flags (-c 8192 --parallel 8 -ngl 999).
#   overhead: decode tok/s (server timing) with and without the 10 Hz NVML + 1 Hz /metrics sampler,
#             8 interleaved rounds of tg128 on 8B Q4_0; the sampler threads' CPU per second.
#   test:     the gpu-marked NVML source test against the real GPU.
# Writes $OUT/r/telemetry-{energy,overhead}.json and .txt. About 3 minutes after 1_setup.sh.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
models=""
for q in ${QUANTS:-q4_0 f16}; do
  f=$MODELS/llama-8b-random-$q.gguf
  [ -f "$f" ] && models="$models --model $f" || echo "missing $f (GPU_MODELS of 1_setup.sh makes it)"
done
nvidia-smi --query-gpu=name,power.draw,power.limit,memory.used,memory.total --format=csv | tee "$OUT/r/telemetry-nvidia-smi.txt"
for part in ${PARTS:-energy overhead test}; do case $part in
energy) # shellcheck disable=SC2086 - one --model per word
  timeout 240 python3 benchmarks/telemetry_bench.py energy $models --concurrency 1,8 --min-seconds 8 --ctx 8192 \
    --server-args "-ngl 999" --output "$OUT/r/telemetry-energy.json" > "$OUT/r/telemetry-energy.txt" 2>&1
  echo "energy rc=$?"; tail -12 "$OUT/r/telemetry-energy.txt" ;;
overhead) timeout 150 python3 benchmarks/telemetry_bench.py overhead --model "$MODELS/llama-8b-random-q4_0.gguf" \
    --rounds 8 --n-gen 128 --server-args "-ngl 999" --output "$OUT/r/telemetry-overhead.json" \
    > "$OUT/r/telemetry-overhead.txt" 2>&1
  echo "overhead rc=$?"; head -4 "$OUT/r/telemetry-overhead.txt" ;;
test) timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu plugins/velollm-nvidia/tests/test_nvidia_telemetry.py 2>&1 | tail -3 ;;
esac; done
