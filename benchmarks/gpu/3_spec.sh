#!/usr/bin/env bash
# GPU step 3: speculative decoding speedup vs SYNTHETIC acceptance, Llama 3.2 3B-shape targets with the
# 1B-shape draft (and the 8B F16 shape), with the advisor's prediction per point; then variants that
# test where the per-step overhead comes from (backend sampling, CUDA graphs off).
# PARTS="base variants 8b ngram" selects what runs (default: all but ngram).
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
D=$MODELS/llama-1b-random-q4_0.gguf
S="timeout ${PART_TIMEOUT:-240} python3 benchmarks/speculative_synthetic.py --iterations 3 --option n_gpu_layers=999"
for part in ${PARTS:-base variants 8b}; do case $part in
base) $S --target $MODELS/llama-3b-random-q4_0.gguf --draft $D --draft-max 2,4 --acceptance 0.6,0.7,0.75,0.8,0.9 --predict \
        --label 3b-q4_0 --output "$OUT/r/spec-3b-q4_0.json" 2>&1 | grep -E "costs|SYNTH|Error|error" ;;
variants)
  $S --target $MODELS/llama-3b-random-q4_0.gguf --draft $D --draft-max 4 --acceptance 0.75,0.9 --option request.backend_sampling=true \
     --label 3b-backend-sampling --output "$OUT/r/spec-3b-bs.json" 2>&1 | grep -E "SYNTH|Error|error"
  $S --target $MODELS/llama-3b-random-q4_0.gguf --draft $D --draft-max 4 --acceptance 0.75,0.9 --option env.GGML_CUDA_DISABLE_GRAPHS=1 \
     --label 3b-no-cuda-graphs --output "$OUT/r/spec-3b-nographs.json" 2>&1 | grep -E "SYNTH|Error|error" ;;
8b) $S --target $MODELS/llama-8b-random-f16.gguf --draft $D --draft-max 4,8 --acceptance 0.75,0.9,0.95 --predict \
        --label 8b-f16 --output "$OUT/r/spec-8b-f16.json" 2>&1 | grep -E "costs|SYNTH|Error|error" ;;
ngram) # a draft that costs nothing: n-gram drafting (random-weight output loops, so drafts exist)
  for m in ${NG_MODELS:-3b-random-q4_0 1b-random-q4_0}; do
    $S --target $MODELS/llama-$m.gguf --draft ngram --draft-min 1 --ngram-match 8 --draft-max ${NG_K:-4,8,16} \
       --acceptance ${NG_A:-0.7,0.75,0.8,0.9} --label ngram-$m --output "$OUT/r/spec-ngram-$m.json" 2>&1 | grep -E "SYNTH|Error|error"
  done ;;
esac; done
grep -h "dur(\|draft acceptance\|statistics" /tmp/velollm-llama-server-*.log 2>/dev/null | tail -60 > "$OUT/r/spec-server-stats.txt"
