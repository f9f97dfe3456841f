#!/usr/bin/env bash
# GPU-host step 9 (after 1_setup.sh's install and CUDA build): speculation as a user runs it.
# The target is Gemma 3 270M, the real model the CPU figures use: GEMMA=<path to its GGUF> (the GPU
# machine cannot install the PyPI package; default: the name, where it is installed). PARTS selects:
#   cpu     the host's own CPU (the second CPU type): `velollm speculative bench` n-gram, code_edit and
#           quote_answer, 3 interleaved iterations, RUNS times (default 3), with the GPU hidden
#           (CUDA_VISIBLE_DEVICES=""), on the CPU build in CPU_BIN (else the CUDA build's CPU kernels):
#           exit 0 with speed, the text verdict, and the advisor's recommended draft max measured
#           before its command.
#   bench   the same on the GPU, 5 iterations.
#   search  `velollm speculative search` on the GPU: ngram-mod, ngram-map-k, ngram-simple x draft max
#           4,8,16,32 x match 4,8,12, successive halving; the advisor's pick against the best measured.
#   mtp     Qwen3.5-27B shape with its MTP head, TYPE (default f16: 16-bit weights, one server up at a
#           time so it fits an H100), SYNTHETIC acceptance a = 0.75 predicted from a fit at a = 0.5,
#           draft max K (default "4 5"), 5 iterations of 256 tokens (benchmarks/speculative_synthetic.py).
#           Label every figure SYNTHETIC acceptance.
# Raw output: $OUT/r/spec9-*.json and .txt, each .txt beginning with the command that made it.
cd "$(dirname "$0")/../.." && . benchmarks/gpu/env.sh
GPU="--option n_gpu_layers=999"
GEMMA=${GEMMA:-gemma3-270m}
run() {  # run NAME COMMAND...: the command, its output and its exit code in $OUT/r/NAME.txt
  local name=$1; shift
  { echo "\$ $*"; "$@"; echo "exit $?"; } > "$OUT/r/$name.txt" 2>&1
  tail -22 "$OUT/r/$name.txt"
}
NGRAM="--target $GEMMA --draft ngram --suite code_edit --suite quote_answer"
for part in ${PARTS:-cpu bench search mtp}; do case $part in
cpu)
  grep -m1 "model name" /proc/cpuinfo; nproc
  # CPU_BIN: a CPU build's bin folder (velollm llamacpp install, no --cuda); else the CUDA build's CPU kernels
  for r in $(seq 1 "${RUNS:-3}"); do
    CUDA_VISIBLE_DEVICES="" VELOLLM_LLAMACPP_DIR=${CPU_BIN:-} run spec9-cpu-r$r $VELOLLM speculative bench $NGRAM \
      --iterations 3 --output "$OUT/r/spec9-cpu-r$r.json"
  done ;;
bench)
  run spec9-bench $VELOLLM speculative bench $NGRAM --iterations 5 $GPU --output "$OUT/r/spec9-bench.json" ;;
search)
  run spec9-search $VELOLLM speculative search $NGRAM --spec-type ngram-mod --spec-type ngram-map-k \
    --spec-type ngram-simple --draft-max 4,8,16,32 --ngram-match 4,8,12 $GPU --output "$OUT/r/spec9-search.json" ;;
mtp)
  TYPE=${TYPE:-f16}
  python3 benchmarks/make_spec_models.py --out $MODELS --mtp 27b --type "$TYPE" \
    --tokenizer .dev/gpu/smollm2-tokenizer.gguf | tail -1
  for k in ${K:-4 5}; do
    run spec9-mtp27-$TYPE-k$k python3 benchmarks/speculative_synthetic.py \
      --target $MODELS/qwen35-27b-mtp-random-$TYPE.gguf --spec-type draft-mtp --draft-max $k --acceptance 0.5,0.75 \
      --iterations 5 --max-tokens 256 --predict --one-at-a-time $GPU --label mtp27-$TYPE-k$k \
      --output "$OUT/r/spec9-mtp27-$TYPE-k$k.json"
  done ;;
*) echo "unknown part $part" ;;
esac; done
