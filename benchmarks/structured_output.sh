#!/usr/bin/env bash
# Decode rate with and without a JSON Schema constraint on llama-server (its json_schema becomes a
# grammar the sampler applies to every token): the same model, suite and answer budget, plain and
# constrained runs interleaved in ROUNDS, so load on the machine moves both alike. Prints each round's
# medians and the ratio (constrained / plain); writes the result JSONs and the console log to OUT
# (default benchmarks/results/cpu). Usage: [ROUNDS=2] benchmarks/structured_output.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MODEL=${1:-gemma3-270m}
OUT=${OUT:-benchmarks/results/cpu}
NAME=structured-output-$MODEL
SCHEMA=$OUT/$NAME-schema.json
mkdir -p "$OUT"
cat > "$SCHEMA" <<'JSON'
{"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
 "age": {"type": "integer", "minimum": 0, "maximum": 120},
 "skills": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4}},
 "required": ["name", "age", "skills"], "additionalProperties": false}
JSON
common=(--backend llamacpp --model "$MODEL" --suite short_completion --iterations 5 --warmup 1 --natural-stop
        --max-tokens 96 --option threads=2)
{
  echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "# uptime before: $(uptime)"
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for kind in plain schema; do
      extra=(); [ "$kind" = schema ] && extra=(--json-schema "$SCHEMA")
      echo "## \$ velollm benchmark ${common[*]} ${extra[*]} --output $OUT/$NAME-$kind-$round.json"
      COLUMNS=80 velollm benchmark "${common[@]}" "${extra[@]}" --output "$OUT/$NAME-$kind-$round.json" 2>&1 | tail -4
    done
  done
  echo "# uptime after: $(uptime)"
  python - "$OUT" "$NAME" "${ROUNDS:-2}" <<'PY'
import json, statistics, sys
out, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for r in range(1, rounds + 1):
    medians = {}
    for kind in ("plain", "schema"):
        runs = json.load(open(f"{out}/{name}-{kind}-{r}.json"))["runs"]
        medians[kind] = statistics.median(run["decode_tokens_per_s"] for run in runs)
        valid = [run["json_valid"] for run in runs if run.get("json_valid") is not None]
        tokens = statistics.median(run["completion_tokens"] for run in runs)
        print(f"round {r} {kind}: decode {medians[kind]:.1f} tok/s (median of {len(runs)}), "
              f"{tokens:g} tokens" + (f", {sum(valid)}/{len(valid)} valid JSON" if valid else ""))
    print(f"round {r} ratio schema/plain: {medians['schema'] / medians['plain']:.3f}")
PY
} | tee "$OUT/$NAME.txt"
