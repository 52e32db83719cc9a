"""Training time of the exact encoder's converged recipe as it was (one forward pass per step, every
sequence padded to the longest, logits at every position) against what it is now (passes of
similar length, logits only where the next token is a target), side by side on the same
documents, and how far apart the two trained adapters are. The old way is the encoder with
``pad_to`` set to the longest sequence, which keeps every position.

The passages' augmentations must be cached (a `hyperprag bench` or `hyperprag augment` run over
them); this script never generates, so it times training alone.
Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exact_passes.py [--docs 5] [--data FILE]
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from hyperprag.adapter import content_hash
from hyperprag.augment import read_cached
from hyperprag.data import load_questions
from hyperprag.exact import RECIPES, ExactEncoder, training_sequences
from hyperprag.models import load_base_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/squad.jsonl")
    parser.add_argument("--docs", type=int, default=5, help="documents with a cached augmentation to time")
    parser.add_argument("--recipe", default="converged", choices=sorted(RECIPES))
    args = parser.parse_args()

    model, tok = load_base_model()
    encoder = ExactEncoder(model, tok, RECIPES[args.recipe])
    passages = {content_hash(p.text): p for ex in load_questions(args.data) for p in ex.passages}
    docs = [(p, aug) for h, p in passages.items() if (aug := read_cached(encoder.augmenter.cache, h)) and not aug.failed]
    if len(docs) < args.docs:
        raise SystemExit(f"only {len(docs)} passages of {args.data} have a cached augmentation; "
                         f"run `hyperprag augment` on them first")
    times = []
    for doc, aug in docs[: args.docs]:
        seqs = training_sequences(doc, aug)
        rows = [encoder._tokenize(s) for s in seqs]
        lengths = [len(ids) for ids, _ in rows]
        padded = ExactEncoder(model, tok, replace(encoder.lora, pad_to=max(lengths)), augmenter=encoder.augmenter)
        timed = {}
        for name, enc in (("one pass", padded), ("split", encoder)):
            t0 = time.perf_counter()
            timed[name] = enc.train(seqs)
            times.append((name, time.perf_counter() - t0))
        diff = max(((timed["split"][n][1] - b).norm() / b.norm()).item() for n, (_, b) in timed["one pass"].items())
        print(f"{doc.title[:30]:30s} tokens {lengths}: one pass {times[-2][1]:.1f} s, split {times[-1][1]:.1f} s, "
              f"passes {encoder._passes(rows)}, max relative |dB| {diff:.1e}", flush=True)
    one = statistics.median(s for n, s in times if n == "one pass")
    split = statistics.median(s for n, s in times if n == "split")
    print(f"median over {args.docs} documents ({args.recipe}, torch threads {torch.get_num_threads()}): "
          f"one pass {one:.1f} s, split {split:.1f} s, {one / split:.2f}x faster")


if __name__ == "__main__":
    main()
