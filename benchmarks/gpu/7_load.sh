#!/usr/bin/env bash
# GPU step 7 (issue 13): load profiles on the CUDA llama-server with the 8B shape (random weights,
# q4_0, a fixed output length): a continuous-concurrency sweep 1..64, a Poisson sweep that finds the
# knee, and 64/128/256 streams with the client's CPU per token recorded, to show the client is not
# the limit. Needs step 1 (GPU_MODELS with 8b:q4_0). About 4-5 minutes on one H200.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
M=$MODELS/llama-8b-random-q4_0.gguf
common=(--backend llamacpp --model "$M" --option n_gpu_layers=999 --workload pp512/tg128 --warmup 1)
# PARTS selects (default: all three): concurrency poisson streams.
for part in ${PARTS:-concurrency poisson streams}; do case $part in
concurrency) time $VELOLLM benchmark "${common[@]}" --concurrency 1,2,4,8,16,32,64 --iterations 3 \
  --option ctx_size=65536 --output "$OUT/r/load-concurrency.json" 2>&1 | tail -16 ;;
poisson) time $VELOLLM benchmark "${common[@]}" --profile sweep --arrivals poisson --max-concurrency 64 --requests 96 \
  --option ctx_size=65536 --slo ttft_ms=1000,tpot_ms=50 --output "$OUT/r/load-poisson-sweep.json" 2>&1 | tail -16 ;;
streams) time $VELOLLM benchmark "${common[@]}" --concurrency 64,128,256 --iterations 2 --warmup 1 \
  --option ctx_size=196608 --output "$OUT/r/load-streams.json" 2>&1 | tail -12 ;;
esac; done
python3 - "$OUT/r" <<'PY'
import json, sys, pathlib
for name in ("load-concurrency", "load-poisson-sweep", "load-streams"):
    path = pathlib.Path(sys.argv[1]) / f"{name}.json"
    if not path.exists():
        continue
    data = json.loads(path.read_text())
    print(f"== {name}: status {data['status']}, knee {(data.get('sweep') or {}).get('knee')}")
    for lv in data["levels"]:
        print(f"{lv['key']:>12} req/s {lv['request_throughput'] or 0:7.2f} out tok/s {lv['output_throughput'] or 0:8.1f} "
              f"TTFT p50 {lv['ttft_ms']['median'] or 0:7.1f} TPOT p50 {lv['tpot_ms']['median'] or 0:6.2f} "
              f"fail {lv['failed']} streams {lv['max_concurrency']} cpu/tok {lv.get('client_cpu_ms_per_token')}")
PY
