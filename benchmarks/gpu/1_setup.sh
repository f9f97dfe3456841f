#!/usr/bin/env bash
# GPU step 1: install VeloLLM, build llama.cpp with CUDA (background), make random-weight models,
# and check `velollm detect` against nvidia-smi.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/hw-wheels/*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/velollm-nvidia -e plugins/velollm-llamacpp
mkdir -p /tmp/llsrc && tar xzf .dev/llama-src.tar.gz -C /tmp/llsrc
nvidia-smi --query-gpu=name,memory.total,driver_version,pci.bus_id,clocks.max.memory --format=csv | tee "$OUT/r/nvidia-smi.txt"
(time $VELOLLM llamacpp install --cuda --target llama-server --target llama-bench > /tmp/build.log 2>&1; echo "build rc=$?" >> /tmp/build.log) 2> /tmp/build.time &
TOK=.dev/gpu/smollm2-tokenizer.gguf
python3 benchmarks/make_gguf_models.py --out $MODELS --shapes 1b --types q4_0,q8_0,f16 --tokenizer $TOK
python3 benchmarks/make_gguf_models.py --out $MODELS --shapes 3b --types q8_0 --tokenizer $TOK
python3 benchmarks/make_gguf_models.py --out $MODELS --shapes 8b --types q4_0,q8_0 --tokenizer $TOK
ls -la $MODELS | tee "$OUT/r/models.txt"
$VELOLLM detect --json > "$OUT/r/detect.json"; $VELOLLM detect | tee "$OUT/r/detect.txt"
python3 -m pytest -q -p no:cacheprovider plugins/velollm-nvidia/tests/test_gpu_real.py 2>&1 | tail -3 | tee "$OUT/r/gpu-test.txt"
wait
cat /tmp/build.time; tail -3 /tmp/build.log; cp /tmp/build.log "$OUT/r/build.log"
$VELOLLM llamacpp where
