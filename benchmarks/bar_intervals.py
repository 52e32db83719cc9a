"""Where the generated adapters stand against the bar, with 95% bootstrap intervals.

The bar is stated in two shares: of the closed-book to passage-in-prompt F1 gap the generated
adapters close (at least half), and of that lift another question's adapters lose (at least 80%).
On 50-100 questions both the numerator and the gap itself are noisy, so a share alone can look
decisive when the run cannot decide. This pools the answers of one or more ``hyperprag bench``
runs (slices of one dataset, say) question by question and prints each share with its interval.

    .venv/bin/python benchmarks/bar_intervals.py "SQuAD test=out/repro28:squad" \\
        "HotpotQA 0-99=out/repro28:hotpotqa,out/repro28_hot50:hotpotqa"

Each argument is ``LABEL=DIR:DATASET[,DIR:DATASET...]``: a bench output directory (its
results.json, or for runs before session 28 its ``work/``, holds every answer, the wrong-document
ones too) and the dataset's name there. A run needs the
closed and rag modes and the adapter mode measured (``--mode``: hyper, the default, or prag, the
trained adapters, with the same bar); a question (by id) may be in one source only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from answer_kinds import answers, by_id  # noqa: E402
from hyperprag.metrics import bootstrap_share, paired_bootstrap  # noqa: E402


def modes(mode: str = "hyper") -> tuple[str, ...]:
    return ("closed", "rag", mode, f"{mode}-wrongdoc")


def f1_by_id(run: Path, dataset: str, mode: str) -> dict[str, float]:
    """F1 by question id from the run's results.json (which holds the wrong-document answers since
    session 28), else from the answer files in its work/."""
    results = run / "results.json"
    if results.exists():
        data = json.loads(results.read_text())["datasets"]
        if dataset not in data:
            raise SystemExit(f"{results}: no dataset {dataset!r} (has {', '.join(data)})")
        predictions = data[dataset].get("predictions")
        if predictions is not None:  # else a run from before session 28: its answers are in work/
            if mode not in predictions:  # e.g. the bench could not draw the wrong-document ablation
                raise SystemExit(f"{results}: {dataset} has no mode {mode!r} (has {', '.join(predictions)})")
            return {i: p["f1"] for i, p in by_id(predictions[mode], f"{results} {dataset}/{mode}").items()}
    return {i: r["f1"] for i, r in answers(run / "work", dataset, mode).items()}


def pooled_rows(sources: list[tuple[Path, str]], mode: str = "hyper") -> list[dict[str, float]]:
    """One row per question of every source: its F1 closed-book, with rag, and with ``mode``'s own
    and another question's adapters."""
    rows, seen = [], set()
    for run, dataset in sources:
        by_mode = {m: f1_by_id(run, dataset, m) for m in modes(mode)}
        ids = set(by_mode["closed"])
        if any(set(a) != ids for a in by_mode.values()):
            raise SystemExit(f"{run}: the modes of {dataset} answer different questions")
        if ids & seen:  # slices that overlap would count a question twice and narrow the interval
            raise SystemExit(f"{run}: {len(ids & seen)} questions of {dataset} are already in an earlier source")
        seen |= ids
        rows += [{m: by_mode[m][i] for m in by_mode} for i in sorted(ids)]
    return rows


def bar_figures(rows: list[dict[str, float]], mode: str = "hyper") -> dict:
    """Mean F1 per mode; the share of the gap ``mode`` closes and of its lift the wrong adapters
    lose, each (estimate, low, high)."""
    col = {m: [r[m] for r in rows] for m in modes(mode)}
    means = {m: sum(v) / len(v) for m, v in col.items()}
    gap = bootstrap_share([h - c for h, c in zip(col[mode], col["closed"])],
                          [r - c for r, c in zip(col["rag"], col["closed"])])
    lost = bootstrap_share([h - w for h, w in zip(col[mode], col[f"{mode}-wrongdoc"])],
                           [h - c for h, c in zip(col[mode], col["closed"])])
    return {"n": len(rows), "means": means, "gap_share": gap, "lift_lost": lost,
            "gap": paired_bootstrap(col["rag"], col["closed"]), "lift": paired_bootstrap(col[mode], col["closed"])}


def _share(x: tuple[float, float, float], of: tuple[float, float, float], what: str) -> str:
    """A share with its interval, or why there is none: a share of a gap (or lift) whose own
    interval reaches zero is no figure."""
    if x[0] != x[0] or of[1] <= 0:
        return f"not measured: {what} {of[0]:+.3f} [{of[1]:+.3f}, {of[2]:+.3f}]"
    return f"{x[0]:.0%} [{x[1]:.0%}, {x[2]:.0%}]"


def parse_group(spec: str) -> tuple[str, list[tuple[Path, str]]]:
    label, eq, runs = spec.partition("=")
    if not eq or not runs:
        raise SystemExit(f"{spec!r}: expected LABEL=DIR:DATASET[,DIR:DATASET...]")
    sources = []
    for item in runs.split(","):
        run, colon, dataset = item.rpartition(":")
        if not colon or not run:
            raise SystemExit(f"{item!r}: expected DIR:DATASET")
        sources.append((Path(run), dataset))
    return label, sources


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="+", metavar="LABEL=DIR:DATASET[,DIR:DATASET...]")
    ap.add_argument("--mode", choices=("hyper", "prag"), default="hyper",
                    help="the adapters measured: generated (hyper) or trained (prag)")
    args = ap.parse_args()
    print(f"| questions | n | closed | rag | {args.mode} | wrong adapters | share of the gap closed (bar: 50%) "
          "| share of the lift lost (bar: 80%) |\n|---|---|---|---|---|---|---|---|")
    for spec in args.groups:
        label, sources = parse_group(spec)
        f = bar_figures(pooled_rows(sources, args.mode), args.mode)
        m = f["means"]
        print(f"| {label} | {f['n']} | {m['closed']:.3f} | {m['rag']:.3f} | {m[args.mode]:.3f} | "
              f"{m[args.mode + '-wrongdoc']:.3f} | {_share(f['gap_share'], f['gap'], 'gap')} | "
              f"{_share(f['lift_lost'], f['lift'], 'lift')} |")


if __name__ == "__main__":
    main()
