#!/usr/bin/env bash
# In-context baselines (closed, rag) on the first 100 questions of each shared data set.
# Usage: bash benchmarks/foundation.sh [OUT_DIR]   (results JSON per run, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${1:-out/foundation}
mkdir -p "$OUT"
for mode in closed rag; do
  for ds in hotpotqa popqa squad; do
    echo "== $ds $mode"
    .venv/bin/hyperprag eval --data "$DATA/$ds.jsonl" --mode "$mode" --limit 100 --quiet \
      --out "$OUT/$ds-$mode.json"
  done
  echo "== 2wikimultihopqa $mode (BM25 over the corpus)"
  .venv/bin/hyperprag eval --data "$DATA/2wikimultihopqa.jsonl" --corpus "$DATA/2wikimultihopqa_corpus.jsonl" \
    --mode "$mode" --limit 100 --quiet --out "$OUT/2wiki-$mode.json"
done
.venv/bin/python - "$OUT" <<'PY'
import json, pathlib, sys
rows = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
print(f"{'run':<22} {'EM':>6} {'F1':>6} {'s/q':>6}  n")
for p in rows:
    r = json.loads(p.read_text())
    print(f"{p.stem:<22} {r['em']:6.3f} {r['f1']:6.3f} {r['seconds_per_question']:6.2f}  {r['n']}")
PY
