"""Question-focused generated adapters: does the hypernetwork answer better from the sentences
that match the question than from the whole passage?

Generated adapters fail on binding: from a whole SQuAD paragraph they raise all of its names and
numbers together, and the one asked for rarely ends on top (hyper_retrieved.md, session 12). An
exact adapter must be trained before the question is known; a generated one costs milliseconds,
so it can be written at query time from only the passage's ``m`` sentences that BM25 ranks highest
for the question (kept in the passage's order, with its title). Fewer candidate answers in the
adapter leave less to bind.

It runs ``hyperprag bench`` unchanged except that every retrieved passage is cut to those
sentences before anything sees it. So run it with ``--modes closed hyper`` only: rag would read the
cut passages too, and the gap the bar measures is to rag with whole passages. The wrong-document
ablation swaps in another question's (focused) adapters, as for whole passages.

    .venv/bin/python benchmarks/focused_passages.py --sentences 2 -- bench --data ... --modes closed hyper --out out/x
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

import bm25s

import hyperprag.evaluate as evaluate_module
from hyperprag.cli import main as hyperprag_main
from hyperprag.data import Passage, QAExample

# A sentence ends at . ! or ? followed by space and a capital, digit or quote; abbreviations such
# as "U.S. Army" split wrongly now and then, which only moves a cut by a few words.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def focus(passage: Passage, question: str, m: int) -> Passage:
    """The passage cut to its ``m`` sentences that BM25 ranks highest for the question, in the
    passage's order; a passage of at most ``m`` sentences, or one no sentence of which shares a
    word with the question, keeps its first ``m``."""
    sentences = split_sentences(passage.text)
    if len(sentences) <= m:
        return passage
    index = bm25s.BM25()
    index.index(bm25s.tokenize(sentences, stopwords="en", show_progress=False), show_progress=False)
    ids, scores = index.retrieve(bm25s.tokenize([question], stopwords="en", show_progress=False), k=m,
                                 show_progress=False)
    keep = sorted(int(i) for i in ids[0]) if scores[0].max() > 0 else list(range(m))
    return Passage(title=passage.title, text=" ".join(sentences[i] for i in keep), id=passage.id)


def focused_retrieve_all(m: int):
    retrieve_all = evaluate_module.retrieve_all

    def wrapped(examples: Sequence[QAExample], *args, **kwargs) -> list[list[Passage]]:
        retrieved = retrieve_all(examples, *args, **kwargs)
        return [[focus(p, ex.question, m) for p in ps] for ex, ps in zip(examples, retrieved)]

    return wrapped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [--sentences M] -- bench ARGS...")
    parser.add_argument("--sentences", type=int, default=2,
                        help="sentences of each retrieved passage kept, those BM25 ranks highest for the question")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="a hyperprag command line (bench or eval)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a hyperprag command after --")
    if args.sentences < 1:
        parser.error("--sentences must be at least 1")
    flag = next((f for f in ("--modes", "--mode") if f in command), None)  # bench's, eval's
    modes = command[command.index(flag) + 1:] if flag else ["rag"]  # bench's default modes include rag
    if any(m in ("rag", "prag-combine", "hyper-combine") for m in modes):
        parser.error("run with modes without passages in the prompt (closed, hyper): the gap is to whole passages")
    evaluate_module.retrieve_all = focused_retrieve_all(args.sentences)
    return hyperprag_main(command)


if __name__ == "__main__":
    sys.exit(main())
