#!/usr/bin/env bash
# GPU step 6 (after 1_setup.sh): speculative decoding speedup vs SYNTHETIC acceptance per speculation
# type, with drafters that are not free, and the advisor's prediction beside each point (fitted to the
# a = 0.5 run of the same type and draft length; every other acceptance is a prediction):
#   mtp9    Qwen3.5-9B shape, Q4_0, its own MTP head (--spec-type draft-mtp), draft max 2,3
#   mtp27   Qwen3.5-27B shape, Q4_0, its own MTP head, draft max 3,4 (a memory-bound target)
#   eagle8  Llama 3.1 8B shape Q4_0 (from 1_setup.sh) + an EAGLE-3 head in the shape of
#           yuhuili/EAGLE3-LLaMA3.1-Instruct-8B (F16), draft max 3,5
# PARTS selects (default: all three). Each part writes $OUT/r/spec6-<part>.json; the server logs'
# draft statistics go to $OUT/r/spec6-server-stats.txt. Expected: ~5 min after 1_setup.sh (models
# ~1 min, each part 1-1.5 min). TINY=1 runs the same on tiny shapes on a CPU, for testing this script.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
if [ "${TINY:-0}" = 1 ]; then
  M9=tiny M27=tiny E=tiny T=q8_0 HEAD=q8_0 GPU="" ITER=1 TOK=24 A=0.75,0.9
  LLAMA8=$MODELS/llama-tiny-random-q8_0.gguf
  python3 benchmarks/make_gguf_models.py --out $MODELS --shapes tiny --types q8_0 | tail -1
else
  M9=9b M27=27b E=8b T=q4_0 HEAD=f16 GPU="--option n_gpu_layers=999" ITER=${ITER:-2} TOK=${TOK:-128} A=${A:-0.6,0.75,0.9}
  LLAMA8=$MODELS/llama-8b-random-q4_0.gguf
  [ -f "$LLAMA8" ] || python3 benchmarks/make_gguf_models.py --out $MODELS --shapes 8b --types q4_0 \
    --tokenizer .dev/gpu/smollm2-tokenizer.gguf | tail -1
fi
TOKENIZER=$([ -f .dev/gpu/smollm2-tokenizer.gguf ] && echo "--tokenizer .dev/gpu/smollm2-tokenizer.gguf")
S="python3 benchmarks/speculative_synthetic.py --iterations $ITER --max-tokens $TOK --acceptance $A --predict $GPU"
for part in ${PARTS:-mtp9 eagle8 mtp27}; do case $part in
mtp9) python3 benchmarks/make_spec_models.py --out $MODELS --mtp $M9 --type $T $TOKENIZER | tail -1
  timeout ${PART_TIMEOUT:-150} $S --target $MODELS/qwen35-$M9-mtp-random-$T.gguf --spec-type draft-mtp --draft-max 2,3 \
    --label mtp-$M9 --output "$OUT/r/spec6-mtp9.json" 2>&1 | grep -E "costs|SYNTH|fitted|Error|error" ;;
mtp27) python3 benchmarks/make_spec_models.py --out $MODELS --mtp $M27 --type $T $TOKENIZER | tail -1
  timeout ${PART_TIMEOUT:-150} $S --target $MODELS/qwen35-$M27-mtp-random-$T.gguf --spec-type draft-mtp --draft-max 3,4 \
    --label mtp-$M27 --output "$OUT/r/spec6-mtp27.json" 2>&1 | grep -E "costs|SYNTH|fitted|Error|error" ;;
eagle8) python3 benchmarks/make_spec_models.py --out $MODELS --eagle3 $E --type $HEAD $TOKENIZER | tail -1
  timeout ${PART_TIMEOUT:-150} $S --target $LLAMA8 --draft $MODELS/eagle3-$E-random-$HEAD.gguf --spec-type draft-eagle3 \
    --draft-max 3,5 --label eagle3-$E --output "$OUT/r/spec6-eagle8.json" 2>&1 | grep -E "costs|SYNTH|fitted|Error|error" ;;
esac; done
grep -h "draft acceptance\|acc per pos" /tmp/velollm-llama-server-*.log 2>/dev/null | tail -40 > "$OUT/r/spec6-server-stats.txt"
