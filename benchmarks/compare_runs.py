"""Compare modes of ``hyperprag bench`` runs question by question, with paired bootstrap intervals.

Two runs on the same questions differ by a few answers of a hundred more often than by a real
effect; pairing each question's F1 with its own F1 in the other run removes the questions' spread.

    .venv/bin/python benchmarks/compare_runs.py squad benchmarks/report/results.json:prag \\
        out/squad_converged10/results.json:prag out/bench_tied/results.json:hyper

Each later run is compared against the first: its mean F1, and its difference from the first's
with a 95% interval. A run's ``work`` directory stands for its results.json where the mode is
only in the answer files, as the wrong-document ablation is in runs before session 28
(``out/wiki/work:hyper-wrongdoc``); later results.json files hold it as ``hyper-wrongdoc``.
Modes answered in pieces (several runs, or a subset of a wider run) are first joined into one
results.json by ``join_runs.py``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from answer_kinds import answers, by_id
from hyperprag.metrics import paired_bootstrap


def per_question_f1(results: Path, dataset: str, mode: str) -> dict[str, float]:
    """F1 by question id for one mode of one dataset of a bench results.json or work directory."""
    if not results.exists():
        raise SystemExit(f"{results}: no such results.json or work directory")
    if results.is_dir():
        return {i: row["f1"] for i, row in answers(results, dataset, mode).items()}
    data = json.loads(results.read_text())["datasets"]
    if dataset not in data:
        raise SystemExit(f"{results}: no dataset {dataset!r} (has {', '.join(data)})")
    predictions = data[dataset]["predictions"]
    if mode not in predictions:
        raise SystemExit(f"{results}: {dataset} has no mode {mode!r} (has {', '.join(predictions)})")
    return {i: row["f1"] for i, row in by_id(predictions[mode], f"{results} {dataset}/{mode}").items()}


def compare(base: dict[str, float], other: dict[str, float]) -> tuple[float, float, float]:
    """Mean paired difference other - base with its 95% interval; the runs must share their questions."""
    if set(base) != set(other):
        raise SystemExit(f"the runs answer different questions ({len(set(base) ^ set(other))} not in both)")
    ids = sorted(base)
    return paired_bootstrap([other[i] for i in ids], [base[i] for i in ids])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="dataset name in the results (the question file's stem, e.g. squad)")
    ap.add_argument("runs", nargs="+", metavar="RESULTS:MODE",
                    help="a bench results.json (or its work directory) and one of its modes")
    args = ap.parse_args()
    if len(args.runs) < 2:
        ap.error("give at least two RESULTS:MODE to compare")
    runs = []
    for spec in args.runs:
        path, _, mode = spec.rpartition(":")
        if not path:
            ap.error(f"{spec!r}: expected RESULTS:MODE")
        runs.append((spec, per_question_f1(Path(path), args.dataset, mode)))
    (base_name, base), rest = runs[0], runs[1:]
    print(f"| run | F1 | minus {base_name} [95% CI] |\n|---|---|---|")
    print(f"| {base_name} | {sum(base.values()) / len(base):.3f} | |")
    for name, f1 in rest:
        mean, lo, hi = compare(base, f1)
        print(f"| {name} | {sum(f1.values()) / len(f1):.3f} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |")


if __name__ == "__main__":
    main()
