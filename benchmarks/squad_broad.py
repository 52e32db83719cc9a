"""A broad SQuAD test set: one question from every held-out paragraph nothing has used yet.

The benchmark's SQuAD slice is 100 questions from 20 paragraphs of one article (Super Bowl 50),
and the six-article set of topic_specificity.py adds 70 from 24 paragraphs. Neither can tell a
share of 34% from the bar's 50% (benchmarks/bar_intervals.md). This writes, for a checkpoint,
the first question of each paragraph it never trained on, leaving out the paragraphs of the test
slice (``--limit 100 --per-doc 5``), the validation slice (``--skip 378 --limit 50 --per-doc 5``)
and the six-article set, in file order: one question a paragraph, so that questions sharing a
paragraph do not narrow the sample. Nothing is chosen by results.

    .venv/bin/python benchmarks/squad_broad.py checkpoints/gemma-3-270m-token-seq-r128-tied-aug \\
        --out out/squad_broad.jsonl
    .venv/bin/hyperprag bench --data out/squad_broad.jsonl --modes closed rag hyper ...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from topic_specificity import choose, held_out  # noqa: E402
from hyperprag.adapter import content_hash  # noqa: E402
from hyperprag.data import QAExample, load_questions, spread_questions  # noqa: E402


def broad_questions(examples: list[QAExample], held: set[str]) -> list[QAExample]:
    """The first question of every held-out paragraph outside the slices used so far, in file order."""
    used = spread_questions(examples, 100, 5) + spread_questions(examples[378:], 50, 5)
    taken = {content_hash(ex.passages[0].text) for ex in used}
    taken |= {content_hash(p.text) for article in choose(examples, held, 6, 4, 3) for p, _ in article}
    out, seen = [], set()
    for ex in examples:
        h = content_hash(ex.passages[0].text)
        if h in held and h not in taken and h not in seen:
            seen.add(h)
            out.append(ex)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="hypernetwork checkpoint (its heldout_hashes.json)")
    ap.add_argument("--data", default="../shared/data/squad.jsonl")
    ap.add_argument("--out", type=Path, required=True, help="question file to write (JSONL, the shared shape)")
    args = ap.parse_args()
    chosen = broad_questions(load_questions(args.data), held_out(args.checkpoint))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps({"id": ex.id, "question": ex.question, "answers": ex.answers,
                                            "passages": [{"title": p.title, "text": p.text} for p in ex.passages],
                                            "doc_id": ex.doc_id}, ensure_ascii=False) + "\n" for ex in chosen))
    titles = {ex.passages[0].title for ex in chosen}
    print(f"{len(chosen)} questions, one a paragraph, from {len(titles)} articles: {args.out}")


if __name__ == "__main__":
    main()
