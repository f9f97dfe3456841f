#!/usr/bin/env bash
# GPU step 12: why llama-server stops scaling under load, on the 8B shape (random weights, q4_0,
# pp512/tg128, all layers on the GPU). Needs steps 0 and 1 (GPU_MODELS with 8b:q4_0). Four parts
# (PARTS selects; default all, about 25 minutes on one H100):
#   ceiling   velollm benchmark --engine-ceiling at 1/8/32/64 streams: every level's output tok/s, its
#             server efficiency against llama-batched-bench at the same shape, and its diagnosis
#   engine    llama-batched-bench alone at 1/8/32/64 sequences, -fa on and off, unified KV or not: the
#             engine's own curve, raw (the ceiling part runs it with the server's flags only)
#   probe     the server at 64 streams with single changes that bear on the server loop (one HTTP
#             thread per stream, greedy sampling, no polling, per-slot KV): which moves the plateau
#   tune      velollm optimize --for-concurrency 64 --verify: each flag A/B at 64 streams (budget 20 min)
# Record which card ran it (nvidia-smi below) and re-run `PARTS=ceiling` on the same card as the baseline
# of any later comparison.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
M=$MODELS/llama-8b-random-q4_0.gguf
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/r/serving-card.txt"
# llama-batched-bench joins the CUDA build of step 1: only that program compiles (minutes, not the tree).
$VELOLLM llamacpp install --cuda --target llama-batched-bench 2>&1 | tail -2
BB=$($VELOLLM llamacpp where --json | python3 -c "import json,sys; print(json.load(sys.stdin)['programs']['llama-batched-bench'])")
common=(--backend llamacpp --model "$M" --option n_gpu_layers=999 --option ctx_size=65536 --workload pp512/tg128)
for part in ${PARTS:-ceiling engine probe tune}; do case $part in
ceiling) time $VELOLLM benchmark "${common[@]}" --concurrency 1,8,32,64 --iterations 2 --warmup 1 --engine-ceiling \
  --output "$OUT/r/serving-ceiling.json" 2>&1 | tail -24 ;;
engine) for fa in on off; do for kvu in -kvu -no-kvu; do
  echo "== llama-batched-bench -fa $fa $kvu"
  "$BB" -m "$M" -ngl 999 -c 65536 -npp 512 -ntg 128 -npl 1,8,32,64 -fa $fa $kvu --output-format jsonl 2>/dev/null \
    | tee "$OUT/r/serving-engine-fa$fa$kvu.jsonl" | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line); print(f\"pl {r['pl']:3} S_TG {r['speed_tg']:8.1f} tok/s  step {r['t_tg'] * 1000 / r['tg']:6.2f} ms\")"
done; done ;;
probe) for change in "" "--threads-http 64" "--poll 0" "--no-kv-unified" "--kv-unified"; do
  name=$(echo "${change:-defaults}" | tr -d ' -')
  echo "== 64 streams, server_args: ${change:-none}"
  $VELOLLM benchmark "${common[@]}" --concurrency 64 --iterations 2 --warmup 1 --option server_args="$change" \
    --output "$OUT/r/serving-probe-$name.json" 2>&1 | grep -E "c64|what limited" ;
done
  echo "== 64 streams, greedy sampling (request.top_k=1)"
  $VELOLLM benchmark "${common[@]}" --concurrency 64 --iterations 2 --warmup 1 --option request.top_k=1 \
    --output "$OUT/r/serving-probe-topk1.json" 2>&1 | grep -E "c64|what limited" ;;
tune) time $VELOLLM optimize --backend llamacpp --model "$M" --for-concurrency 64 --workload pp512/tg128 \
  --budget 1200 --verify 2>&1 | tail -30; mv velollm-optimize-*-load.json "$OUT/r/" 2>/dev/null ;;
esac; done
python3 - "$OUT/r" <<'PY'
import json, sys, pathlib
for path in sorted(pathlib.Path(sys.argv[1]).glob("serving-*.json")):
    data = json.loads(path.read_text())
    print(f"== {path.name}: status {data['status']}")
    for lv in data["levels"]:
        ceiling = lv.get("engine_ceiling") or {}
        print(f"{lv['key']:>4} out tok/s {lv['output_throughput'] or 0:8.1f} TPOT p50 {lv['tpot_ms']['median'] or 0:6.1f} "
              f"engine {ceiling.get('output_tokens_per_s') or 0:8.1f} eff {lv.get('server_efficiency')} "
              f"| {(lv.get('diagnosis') or {}).get('line')}")
PY
