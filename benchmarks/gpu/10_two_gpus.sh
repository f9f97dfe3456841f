#!/usr/bin/env bash
# GPU step 10, on a kind with two GPUs (nvidia-h100-x2, nvidia-h200-x2): one GPU or two under llama.cpp, for
# a model that fits one card (Llama 3.1 8B shape, Q4_0) and one that needs both (Llama 3.1 70B shape, Q8_0,
# at the context depth where its KV cache takes it past one card). First, in the same warm session:
#   GPU_MODELS="8b:q4_0 70b:q8_0" bash benchmarks/gpu/1_setup.sh
# Then one part per device call (each stays under the 10-minute limit), e.g. PARTS=fits bash this-file.
# Results under $OUT/r/two-gpus/ (raw llama-bench JSON per configuration, and what each part printed):
#   detect    velollm detect --json and its 80-column table, nvidia-smi topo -m; the links VeloLLM reports
#             against the matrix read by the nvidia plugin's parser (must say "same")
#   memory    llama-server's own buffers per GPU for -sm none / layer 1:1 / layer 3:1 / row, beside
#             velollm-gguf's per-GPU estimate (benchmarks/two_gpus.py memory); a refused mode is recorded
#   fits      8B Q4_0, fits one card: llama-bench -sm none -mg 0 | layer | row | tensor (5 reps each)
#   needs     70B Q8_0 at depth D (two_gpus.py depth): layer 1:1 | layer 3:1 | row | tensor; none is
#             expected not to load (recorded, not hidden)
#   optimize  velollm optimize --verify on both models: the one-GPU or split proposal measured
# Name the card and the link (detect part) beside every figure taken from here.
set -u
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
R="$OUT/r/two-gpus"; mkdir -p "$R"
M8=$MODELS/llama-8b-random-q4_0.gguf
M70=$MODELS/llama-70b-random-q8_0.gguf
BENCH=$(python3 -c "from velollm_llamacpp.install import find_programs; print(find_programs()['llama-bench'])")

# bench NAME MODEL "EXTRA FLAGS" CONFIG...: one llama-bench run per "label:flags" config, JSON kept per label.
bench() {
  local name=$1 model=$2 extra=$3; shift 3
  local files=()
  for config in "$@"; do
    local label=${config%%:*} flags=${config#*:}
    # shellcheck disable=SC2086 - flags are words
    if timeout 280 "$BENCH" -m "$model" -ngl 99 -fa 1 $extra $flags -o json > "$R/$name-$label.json" 2> "$R/$name-$label.err"; then
      files+=("$R/$name-$label.json")
    else
      echo "$name $label ($flags): did not run, rc=$?: $(grep -m1 -iE 'error|fail|out of memory' "$R/$name-$label.err")"
    fi
  done
  [ ${#files[@]} -gt 0 ] && python3 benchmarks/two_gpus.py summary "${files[@]}" | tee "$R/$name-summary.md"
}

for part in ${PARTS:-detect memory fits needs optimize}; do case $part in
detect) $VELOLLM detect --json > "$R/detect.json"; COLUMNS=80 $VELOLLM detect > "$R/detect.txt" 2>&1
  nvidia-smi topo -m > "$R/topo.txt" 2>&1; cat "$R/topo.txt" "$R/detect.txt"
  python3 - "$R" <<'EOF'
import json, sys
from velollm_core.api import GpuInfo
from velollm_nvidia.topology import links_from_matrix, nvidia_bus_ids, parse_topo_matrix
folder = sys.argv[1]
report = json.load(open(f"{folder}/detect.json"))
gpus = [GpuInfo.from_dict(gpu) for gpu in report["gpus"]]
matrix = links_from_matrix(parse_topo_matrix(open(f"{folder}/topo.txt").read()), nvidia_bus_ids(gpus))
seen = [(link["pci_bus_ids"], link["kind"]) for link in report["links"]]
print("detect links:", report["links"])
print("PCIe per GPU:", [(g.pci_bus_id, g.pcie_max_generation, g.pcie_width) for g in gpus])
print("same as topo -m" if seen == [(link.pci_bus_ids, link.kind) for link in matrix] else f"DIFFERENT from topo -m: {matrix}")
EOF
  ;;
memory) timeout 500 python3 benchmarks/two_gpus.py memory --model "$M8" --ctx 8192 --output "$R/memory-8b.json" ;;
fits) bench fits "$M8" "-p 512 -n 128 -r 5" "one-gpu:-sm none -mg 0" "layer:-sm layer" "row:-sm row" "tensor:-sm tensor" ;;
needs) D=$(python3 benchmarks/two_gpus.py depth --model "$M70"); echo "70B Q8_0 needs both GPUs from depth $D" | tee "$R/needs-depth.txt"
  bench needs "$M70" "-d $D -p 512 -n 64 -r 2" "layer-1-1:-sm layer -ts 1/1" "layer-3-1:-sm layer -ts 3/1" \
    "row:-sm row -ts 1/1" "tensor:-sm tensor" "one-gpu:-sm none -mg 0" ;;
optimize) for M in "$M8" "$M70"; do n=$(basename "$M" .gguf)
    timeout 60 $VELOLLM optimize --backend llamacpp --model "$M" --format json > "$R/proposal-$n.json" 2>&1
    timeout 270 $VELOLLM optimize --backend llamacpp --model "$M" --verify > "$R/verify-$n.txt" 2>&1; tail -25 "$R/verify-$n.txt"
  done ;;
esac; done
