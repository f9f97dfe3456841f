#!/usr/bin/env bash
# GPU-host step 13 (no GPU, no llama.cpp build, no model: the host's 16 cores alone): installs only what
# the load generator and the mock need, then the capacity runs of issue "load generation past one
# host" (docs/BENCHMARKS.md, "Load generation past one core"). Goals there: >= 50,000 streamed tok/s
# sustained, 10,000 concurrent streams with no errors, TTFT p50 within 5 ms of the mock's 50 ms, client
# CPU per token <= 0.05 ms. 10,000 streams x 200 ms ITL = 50,000 tok/s offered; 12 client processes +
# 4 mock processes = the 16 cores. Then 5,000 x 100 ms (the same rate on fewer sockets), 8 workers
# beside 1. Raw rows: $OUT/r/loadgen-16core-*.json (copy to benchmarks/results/loadgen/).
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
export PYTHONPATH="/tmp/site:$PWD/testkit"
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/hw-wheels/*.whl
python3 -c "import velollm_llamacpp" 2>/dev/null || \
  python3 -m pip install -q --no-deps --no-build-isolation -e . -e libs/velollm-gguf -e plugins/velollm-llamacpp 2>&1 | tail -2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
grep -m1 "model name" /proc/cpuinfo; nproc; uptime; python3 -V
run() { name=$1; shift; python3 benchmarks/loadgen_capacity.py --mock-processes 4 --warmup-rounds 1 \
  --output "$OUT/r/loadgen-16core-$name.json" "$@" 2>&1 | tail -4; }
run 10000x200-w12 --levels 10000 --itl-ms 200 --workers 12
run 5000x100-w8 --levels 5000 --itl-ms 100 --workers 8
# run 5000x100-w1 --levels 5000 --itl-ms 100 --workers 1
uptime
