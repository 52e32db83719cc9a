"""Compare modes of ``hyperprag bench`` runs question by question, with paired bootstrap intervals.

Two runs on the same questions differ by a few answers of a hundred more often than by a real
effect; pairing each question's F1 with its own F1 in the other run removes the questions' spread.

    .venv/bin/python benchmarks/compare_runs.py squad benchmarks/report/results.json:prag \\
        out/squad_converged10/results.json:prag out/bench_tied/results.json:hyper

Each later run is compared against the first: its mean F1, and its difference from the first's
with a 95% interval. A run's ``work`` directory stands for its results.json where the mode is
only in the answer files, as the wrong-document ablation is in runs before session 28
(``out/wiki/work:hyper-wrongdoc``); later results.json files hold it as ``hyper-wrongdoc``.

A run whose questions were answered in pieces pools them: several datasets (comma-separated) and
several results.json files per run (``a.json,b.json:prag``), each file giving every listed dataset
it holds. ``--common`` compares only the questions every run answered, and says how many:

    .venv/bin/python benchmarks/compare_runs.py --common broad_conv32,c88 \
        A/results.json,B/results.json:prag C/results.json:hyper
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from answer_kinds import answers
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
    return {p["id"]: p["f1"] for p in predictions[mode]}


def pooled_f1(paths: list[Path], datasets: list[str], mode: str) -> dict[str, float]:
    """F1 by question id over several results.json files, each giving every listed dataset it holds."""
    if len(paths) == 1 and len(datasets) == 1:
        return per_question_f1(paths[0], datasets[0], mode)
    out: dict[str, float] = {}
    for path in paths:
        if path.is_dir():
            raise SystemExit(f"{path}: a work directory cannot be pooled; give its results.json")
        held = [d for d in datasets if d in json.loads(path.read_text())["datasets"]]
        if not held:
            raise SystemExit(f"{path}: none of the datasets {', '.join(datasets)}")
        for dataset in held:
            f1 = per_question_f1(path, dataset, mode)
            if set(f1) & set(out):
                raise SystemExit(f"{path}: {dataset} answers questions already pooled from another file")
            out.update(f1)
    return out


def compare(base: dict[str, float], other: dict[str, float]) -> tuple[float, float, float]:
    """Mean paired difference other - base with its 95% interval; the runs must share their questions."""
    if set(base) != set(other):
        raise SystemExit(f"the runs answer different questions ({len(set(base) ^ set(other))} not in both)")
    ids = sorted(base)
    return paired_bootstrap([other[i] for i in ids], [base[i] for i in ids])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="dataset name in the results (the question file's stem, e.g. squad); "
                                    "several, comma-separated, are pooled")
    ap.add_argument("runs", nargs="+", metavar="RESULTS:MODE",
                    help="a bench results.json (or its work directory) and one of its modes; "
                         "several results.json, comma-separated, are pooled")
    ap.add_argument("--common", action="store_true",
                    help="compare only the questions every run answered (default: refuse runs that differ)")
    args = ap.parse_args()
    if len(args.runs) < 2:
        ap.error("give at least two RESULTS:MODE to compare")
    runs = []
    for spec in args.runs:
        paths, _, mode = spec.rpartition(":")
        if not paths:
            ap.error(f"{spec!r}: expected RESULTS:MODE")
        runs.append((spec, pooled_f1([Path(p) for p in paths.split(",")], args.dataset.split(","), mode)))
    if args.common:
        shared = set.intersection(*(set(f1) for _, f1 in runs))
        if not shared:
            raise SystemExit("the runs share no question")
        runs = [(name, {i: f1[i] for i in shared}) for name, f1 in runs]
        print(f"{len(shared)} questions answered by every run\n")
    (base_name, base), rest = runs[0], runs[1:]
    print(f"| run | F1 | minus {base_name} [95% CI] |\n|---|---|---|")
    print(f"| {base_name} | {sum(base.values()) / len(base):.3f} | |")
    for name, f1 in rest:
        mean, lo, hi = compare(base, f1)
        print(f"| {name} | {sum(f1.values()) / len(f1):.3f} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |")


if __name__ == "__main__":
    main()
