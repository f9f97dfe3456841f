#!/usr/bin/env bash
# GPU step 6 (after 1_setup.sh): speculative decoding speedup vs SYNTHETIC acceptance per speculation
# type, with drafters that are not free, and the advisor's prediction beside each point (fitted to the
# a = 0.5 run of the same type and draft length; every other acceptance is a prediction).
# PARTS lists NAME[:QUANT] entries (QUANT of the target: q4_0 by default, q8_0 or f16):
#   mtp9    Qwen3.5-9B shape with its own MTP head (--spec-type draft-mtp), draft max 2,3
#   mtp27   Qwen3.5-27B shape with its own MTP head, draft max 3,4
#   eagle8  Llama 3.1 8B shape + an EAGLE-3 head in the shape of yuhuili/EAGLE3-LLaMA3.1-Instruct-8B
#           (F16, as published), draft max 3,5
# e.g. PARTS="eagle8:f16 eagle8 mtp9:f16". Every server of a part (plain + one per acceptance) is up at
# once: a 27B Q8_0 needs A=0.75,0.9 (4 servers) to fit 139 GiB; F16 27B does not fit at all.
# Each part writes $OUT/r/spec6-<name>-<quant>.json (acceptance per draft position included, from the
# server's /metrics) and .txt. DEADLINE (epoch seconds) skips parts that cannot finish before it;
# DROP=1 deletes a part's models after it (the GPU machine has a 64 GiB disk). ITER / TOK / A override
# iterations (3), output tokens (256) and acceptances (0.6,0.75,0.9). TINY=1 runs tiny shapes on a CPU,
# for testing this script.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
TOKENIZER=$([ -f .dev/gpu/smollm2-tokenizer.gguf ] && echo "--tokenizer .dev/gpu/smollm2-tokenizer.gguf")
if [ "${TINY:-0}" = 1 ]; then
  GPU="" ITER=1 TOK=24 A=0.75,0.9 HEAD=q8_0 Q=q8_0
else
  GPU="--option n_gpu_layers=999" ITER=${ITER:-3} TOK=${TOK:-256} A=${A:-0.6,0.75,0.9} HEAD=f16 Q=q4_0
fi
S="python3 benchmarks/speculative_synthetic.py --iterations $ITER --max-tokens $TOK --acceptance $A --predict $GPU"
for part in ${PARTS:-mtp9 eagle8 mtp27}; do
  name=${part%%:*}; q=${part#"$name"}; q=${q#:}; q=${q:-$Q}
  left=$(( ${DEADLINE:-$(( $(date +%s) + 100000 ))} - $(date +%s) ))
  if [ "$left" -lt "${PART_MIN:-120}" ]; then echo "skipped $part: ${left}s left before the deadline"; continue; fi
  out="$OUT/r/spec6-$name-$q"; t0=$(date +%s)
  case $name in
  mtp9|mtp27) shape=${name#mtp}b; ks=$([ "$name" = mtp9 ] && echo 2,3 || echo 3,4)
    [ "${TINY:-0}" = 1 ] && shape=tiny
    python3 benchmarks/make_spec_models.py --out $MODELS --mtp $shape --type "$q" $TOKENIZER | tail -1
    models="$MODELS/qwen35-$shape-mtp-random-$q.gguf"
    timeout $(( left - 10 )) $S --target "$models" --spec-type draft-mtp --draft-max "$ks" \
      --label "mtp-$shape-$q" --output "$out.json" 2>&1 | grep -E "costs|SYNTH|fitted|Error|error" | tee "$out.txt" ;;
  eagle8) shape=8b; [ "${TINY:-0}" = 1 ] && shape=tiny
    python3 benchmarks/make_gguf_models.py --out $MODELS --shapes $shape --types "$q" $TOKENIZER | tail -1
    python3 benchmarks/make_spec_models.py --out $MODELS --eagle3 $shape --type $HEAD $TOKENIZER | tail -1
    models="$MODELS/llama-$shape-random-$q.gguf $MODELS/eagle3-$shape-random-$HEAD.gguf"
    timeout $(( left - 10 )) $S --target "$MODELS/llama-$shape-random-$q.gguf" \
      --draft "$MODELS/eagle3-$shape-random-$HEAD.gguf" --spec-type draft-eagle3 --draft-max 3,5 \
      --label "eagle3-$shape-$q" --output "$out.json" 2>&1 | grep -E "costs|SYNTH|fitted|Error|error" | tee "$out.txt" ;;
  *) echo "unknown part $part"; continue ;;
  esac
  echo "$part: $(( $(date +%s) - t0 )) s" | tee -a "$out.txt"
  # shellcheck disable=SC2086 - one path per word
  if [ "${DROP:-0}" = 1 ]; then rm -f $models; fi
done
