# Sourced by every GPU step: the wheels the GPU machine lacks, our packages, where things live.
export PYTHONPATH=/tmp/site
export VELOLLM_LLAMACPP_SDIST=/tmp/llsrc
export PYTHONUNBUFFERED=1
MODELS=${MODELS:-/tmp/models}
VELOLLM="python3 -m velollm_core"
mkdir -p "$OUT/r"
