"""F1 by answer kind, from the answer files of `hyperprag bench` runs: where does a lift come from?

Multi-hop sets mix three kinds of question that an adapter can lift for different reasons:
- yes/no (the gold answer is "yes" or "no"): a lift can be answer *format* alone ("yes" instead of
  "Yes, both are located in ..."), which any document's adapter teaches;
- "A or B" comparisons ("Which film came out first, X or Y?"): naming one of the two is worth F1
  whether or not the pick is right, so the table also gives how often each column names exactly one
  option and how often that pick is right (about half right is a coin flip, not knowledge);
- the rest (compositional and bridge questions), where the answer must come from the passages.

    .venv/bin/python benchmarks/answer_kinds.py --dataset 2wikimultihopqa \\
        closed=out/wiki_v6/work:closed rag=out/wiki_v6/work:rag v6=out/wiki_v6/work:hyper \\
        "v6 wrong=out/wiki_v6/work:hyper-wrongdoc"
"""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from pathlib import Path

from hyperprag.metrics import normalize_answer

# the options follow the last comma before " or " ("Who lived longer, X or Y?") or the first word ("Was X or Y born first?")
CHOICE = re.compile(r"^(?:.*,\s*|\w+\s+)(.+?)\s+or\s+(.+?)\?$")


def by_id(rows: Iterable[dict], where: str) -> dict[str, dict]:
    """Rows keyed by question id. A repeated id is an error: a dict would keep only its last row,
    and the means, the n and the pairing would differ from the run's own without a word."""
    out: dict[str, dict] = {}
    for row in rows:
        if row["id"] in out:
            raise SystemExit(f"{where}: question {row['id']!r} is listed twice")
        out[row["id"]] = row
    return out


def answers(work: Path, dataset: str, mode: str) -> dict[str, dict]:
    """The bench's answer file for one mode (its name ends in a 12-hex configuration hash)."""
    pattern = re.compile(rf"answers-{re.escape(dataset)}-{re.escape(mode)}-[0-9a-f]{{12}}\.jsonl$")
    files = [f for f in work.glob("answers-*.jsonl") if pattern.search(f.name)]
    if len(files) != 1:
        raise SystemExit(f"{work}: expected one answer file for {dataset}/{mode}, found {len(files)}")
    # split on newlines only: the bench writes answers unescaped (ensure_ascii=False), and
    # str.splitlines would also cut a row at a U+2028 or U+0085 inside a prediction or a title
    lines = files[0].read_text(encoding="utf-8").split("\n")
    return by_id((json.loads(line) for line in lines if line.strip()), str(files[0]))


def kind(row: dict) -> str:
    if {a.strip().lower() for a in row["answers"]} & {"yes", "no"}:
        return "yes/no"
    return "A or B" if CHOICE.search(row["question"]) else "other"


def picked_option(row: dict) -> str | None:
    """The one option of an "A or B" question the prediction names, or None (neither, or both).
    Naming it means saying at least half its words, so "X" names "X born first"."""
    m = CHOICE.search(row["question"])
    said = set(normalize_answer(row["prediction"]).split())

    def recall(option: str) -> float:
        words = normalize_answer(option).split()
        return sum(w in said for w in words) / max(len(words), 1)

    named = [o for o in (m.group(1), m.group(2)) if recall(o) >= 0.5]
    return named[0] if len(named) == 1 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="dataset name in the answer files, e.g. 2wikimultihopqa")
    ap.add_argument("columns", nargs="+", metavar="LABEL=WORK_DIR:MODE",
                    help="a column: its label, a bench OUT/work directory and a mode (closed, rag, hyper, hyper-wrongdoc...)")
    args = ap.parse_args()
    cols = {}
    for spec in args.columns:
        label, _, rest = spec.partition("=")
        work, _, mode = rest.rpartition(":")
        if not (label and work and mode):
            ap.error(f"column {spec!r}: expected LABEL=WORK_DIR:MODE")
        cols[label] = answers(Path(work), args.dataset, mode)
    first = next(iter(cols.values()))
    groups: dict[str, list[str]] = {}
    for qid, row in first.items():
        groups.setdefault(kind(row), []).append(qid)

    print("| kind | n | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for k in ("yes/no", "A or B", "other"):
        ids = groups.get(k, [])
        cells = []
        for rows in cols.values():
            present = [rows[i]["f1"] for i in ids if i in rows]
            cells.append(f"{sum(present) / len(present):.3f}" if present else "-")
        print(f"| {k} | {len(ids)} | " + " | ".join(cells) + " |")

    choice = groups.get("A or B", [])
    if choice:
        print(f"\n'A or B' questions ({len(choice)}): names exactly one option / of those, right")
        for label, rows in cols.items():
            picks = [rows[i] for i in choice if i in rows and picked_option(rows[i])]
            right = sum(r["f1"] > 0.5 for r in picks)
            print(f"- {label}: {len(picks)} / {right} ({right / max(len(picks), 1):.0%})")


if __name__ == "__main__":
    main()
