#!/usr/bin/env bash
# GPU step 9 (after 1_setup.sh; NOT RUN YET): speculation as a user runs it, on the CUDA build.
# PARTS selects what runs (default: all three):
#   bench   `velollm speculative bench` with no kernel flag (the standard CUDA build): n-gram on real
#           Gemma 3 270M text, code_edit and quote_answer, 5 interleaved iterations. Expect exit 0 with
#           speed, a 95% interval and the text verdict (identical / near-ties / different), and the
#           advisor's recommended draft max measured before its command ("measured at draft max N").
#   search  `velollm speculative search`: ngram-mod, ngram-map-k, ngram-simple x draft max 4,8,16,32 x
#           match 4,8,12, successive halving from 1 run; the advisor fitted at the defaults against the
#           other draft lengths measured on their own (held out), its pick vs the best measured.
#   mtp     Qwen3.5-27B shape, Q8_0, its MTP head, SYNTHETIC acceptance a = 0.75, draft max 2..6, 5
#           iterations each (benchmarks/speculative_synthetic.py; per draft length one plain server and
#           two speculative ones, a = 0.5 where the advisor is fitted and a = 0.75 that it predicts:
#           about 87 GiB at once, an H200): which draft length reaches 2.0x, if any, and what the verify
#           batch costs (llama-bench, --predict) cap it at. SYNTHETIC acceptance: label it so.
# Raw output: $OUT/r/spec9-*.json and .txt, each beside the command that made it (in the .txt).
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
GPU="--option n_gpu_layers=999"
run() {  # run NAME COMMAND...: the command, its output and its exit code in $OUT/r/NAME.txt
  local name=$1; shift
  { echo "\$ $*"; "$@"; echo "exit $?"; } > "$OUT/r/$name.txt" 2>&1
  tail -25 "$OUT/r/$name.txt"
}
for part in ${PARTS:-bench search mtp}; do case $part in
bench)
  run spec9-bench $VELOLLM speculative bench --target gemma3-270m --draft ngram --suite code_edit \
    --suite quote_answer --iterations 5 $GPU --output "$OUT/r/spec9-bench.json" ;;
search)
  run spec9-search $VELOLLM speculative search --target gemma3-270m --draft ngram --spec-type ngram-mod \
    --spec-type ngram-map-k --spec-type ngram-simple --draft-max 4,8,16,32 --ngram-match 4,8,12 \
    --suite code_edit --suite quote_answer $GPU --output "$OUT/r/spec9-search.json" ;;
mtp)
  python3 benchmarks/make_spec_models.py --out $MODELS --mtp 27b --type q8_0 | tail -1
  for k in 2 3 4 5 6; do
    run spec9-mtp27-q8_0-k$k timeout 900 python3 benchmarks/speculative_synthetic.py \
      --target $MODELS/qwen35-27b-mtp-random-q8_0.gguf --spec-type draft-mtp --draft-max $k --acceptance 0.5,0.75 \
      --iterations 5 --max-tokens 256 --predict $GPU --label mtp27-q8_0-k$k --output "$OUT/r/spec9-mtp27-q8_0-k$k.json"
  done
  [ "${DROP:-0}" = 1 ] && rm -f $MODELS/qwen35-27b-mtp-random-q8_0.gguf ;;
*) echo "unknown part $part" ;;
esac; done
