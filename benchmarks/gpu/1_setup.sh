#!/usr/bin/env bash
# GPU step 1 (idempotent: skips what a warm machine already has): install VeloLLM, build llama.cpp
# with CUDA (background), make the random-weight models, check `velollm detect` against nvidia-smi.
# Models: GPU_MODELS="1b:q4_0 3b:q4_0,q8_0 8b:q4_0,f16" by default.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/hw-wheels/*.whl
python3 -c "import velollm_llamacpp" 2>/dev/null || \
  python3 -m pip install -q --no-deps --no-build-isolation -e . -e libs/velollm-gguf -e plugins/velollm-nvidia -e plugins/velollm-llamacpp
[ -d /tmp/llsrc/ggml ] || { mkdir -p /tmp/llsrc && tar xzf .dev/llama-src.tar.gz -C /tmp/llsrc; }
if ! $VELOLLM llamacpp where > /dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,pci.bus_id,clocks.max.memory --format=csv | tee "$OUT/r/nvidia-smi.txt"
  (time $VELOLLM llamacpp install --cuda --target llama-server --target llama-bench > /tmp/build.log 2>&1; echo "build rc=$?" >> /tmp/build.log) 2> /tmp/build.time &
fi
for spec in ${GPU_MODELS:-1b:q4_0 3b:q4_0,q8_0 8b:q4_0,f16}; do
  python3 benchmarks/make_gguf_models.py --out $MODELS --shapes ${spec%%:*} --types ${spec#*:} --tokenizer .dev/gpu/smollm2-tokenizer.gguf | tail -2
done
[ -f "$OUT/r/detect.json" ] || $VELOLLM detect --json > "$OUT/r/detect.json"
wait
[ -f /tmp/build.time ] && { cat /tmp/build.time; tail -3 /tmp/build.log; }
$VELOLLM llamacpp where | tail -3
