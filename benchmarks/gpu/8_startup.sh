#!/usr/bin/env bash
# GPU step 8: start-up of the CLI on the GPU machine (a real GPU, NVML initialised), side by side with
# python -c pass: byte-compiled as scripts/setup does, then from source. Carry .dev (benchmarks/gpu/0_prepare.sh).
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/hw-wheels/*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . -e libs/velollm-gguf -e plugins/velollm-nvidia -e plugins/velollm-amd -e plugins/velollm-apple -e plugins/velollm-intel -e plugins/velollm-ollama -e plugins/velollm-llamacpp -e plugins/velollm-openai 2>&1 | grep -v "^\s*$" | tail -2
python3 -m compileall -q velollm_core libs plugins > /dev/null
python3 -m velollm_core detect --json | python3 -c "import json,sys; d=json.load(sys.stdin); print([ (g['name'], g['source']) for g in d['gpus']], d['warnings'])"
python3 -X importtime -m velollm_core detect --json 2>&1 >/dev/null | grep -c "pydantic" || true
python3 benchmarks/startup.py --repeat 15
python3 benchmarks/startup.py --repeat 15 --from-source
