#!/usr/bin/env bash
# GPU-host step 11 (no GPU needed: the host's 16 cores): the load generator's capacity against the test
# kit's mock server, one client process beside 8 and 12 workers (velollm_core/bench/workers.py), the
# mock on 4 processes sharing its port (SO_REUSEPORT) so it is not the limit. Goals (docs/BENCHMARKS.md,
# "Load generation past one core"): >= 50,000 streamed tok/s sustained, 10,000 concurrent streams with no
# errors, TTFT p50 within 5 ms of the mock's 50 ms, client CPU per token <= 0.05 ms.
#   10,000 streams x 200 ms ITL = 50,000 tok/s offered; 5,000 streams x 100 ms the same rate, fewer sockets.
# About 3-5 minutes. Raw rows: $OUT/r/loadgen-16core-*.json (copy them to benchmarks/results/loadgen/).
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
uptime
nproc
python3 benchmarks/loadgen_capacity.py --levels 5000 --itl-ms 100 --workers 1,8 --mock-processes 4 \
  --output "$OUT/r/loadgen-16core-5000x100.json" 2>&1 | tail -6
python3 benchmarks/loadgen_capacity.py --levels 10000 --itl-ms 200 --workers 8,12 --mock-processes 4 \
  --output "$OUT/r/loadgen-16core-10000x200.json" 2>&1 | tail -6
uptime
