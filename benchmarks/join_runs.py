"""Join the modes of several ``hyperprag bench`` runs on the same questions into one results.json.

Adapters trained across sessions leave their answers in pieces: session 29 answered the broad
set's closed, rag and hyper modes on 120 questions, but trained converged adapters for only 32,
and session 30 (on a fresh machine) the other 88. ``bar_intervals.py`` reads every mode of a
question from one run, so this writes one: each mode is taken from the runs named for it, by
question id, and every mode must answer every question of ``--questions`` (a run of more
questions, such as session 28's on all 237, gives just those).

    .venv/bin/python benchmarks/join_runs.py --questions out/broad_exact120.jsonl --out B/conv120 \\
        closed=B/broad_exact120/results.json:broad_exact120 rag=B/broad_exact120/results.json:broad_exact120 \\
        prag=B/broad_conv32/results.json:broad_conv32,B/c88/results.json:c88 \\
        prag-wrongdoc=B/broad_conv32/results.json:broad_conv32,B/c88/results.json:c88

Nothing is recomputed: the predictions and their F1 are copied as the runs wrote them.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from hyperprag.data import load_questions


def predictions(sources: str, mode: str) -> dict[str, dict]:
    """Prediction rows by question id of ``mode`` over ``RESULTS:DATASET[,RESULTS:DATASET...]``."""
    rows: dict[str, dict] = {}
    for source in sources.split(","):
        path, _, dataset = source.rpartition(":")
        if not path:
            raise SystemExit(f"{source!r}: expected RESULTS:DATASET")
        data = json.loads(Path(path).read_text())["datasets"]
        if dataset not in data or mode not in data[dataset]["predictions"]:
            raise SystemExit(f"{path}: no mode {mode!r} of dataset {dataset!r}")
        for row in data[dataset]["predictions"][mode]:
            if row["id"] in rows:
                raise SystemExit(f"{path}: question {row['id']} of {mode} is already in an earlier source")
            rows[row["id"]] = row
    return rows


def join(question_ids: list[str], specs: list[str]) -> dict[str, list[dict]]:
    """Each ``MODE=SOURCES`` spec's predictions, in the order of ``question_ids``."""
    repeated = sorted(i for i, n in Counter(question_ids).items() if n > 1)
    if repeated:  # each would be written, and counted, twice
        raise SystemExit(f"the questions list {len(repeated)} ids twice, e.g. {repeated[0]!r}")
    joined = {}
    for spec in specs:
        mode, eq, sources = spec.partition("=")
        if not eq:
            raise SystemExit(f"{spec!r}: expected MODE=RESULTS:DATASET[,...]")
        rows = predictions(sources, mode)
        missing = set(question_ids) - set(rows)
        if missing:
            raise SystemExit(f"{mode}: {len(missing)} of the {len(question_ids)} questions have no answer in its runs")
        joined[mode] = [rows[i] for i in question_ids]  # a run of more questions gives just these
    return joined


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", required=True, help="the question file every mode must answer, all of it")
    ap.add_argument("--out", required=True, help="directory for the joined results.json")
    ap.add_argument("--name", help="dataset name in the joined file (default: the question file's stem)")
    ap.add_argument("specs", nargs="+", metavar="MODE=RESULTS:DATASET[,...]")
    args = ap.parse_args()
    ids = [ex.id for ex in load_questions(args.questions)]
    name = args.name or Path(args.questions).stem
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"joined_from": args.specs, "datasets": {name: {"predictions": join(ids, args.specs)}}}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{out / 'results.json'}: {len(ids)} questions, modes {', '.join(results['datasets'][name]['predictions'])}")


if __name__ == "__main__":
    main()
