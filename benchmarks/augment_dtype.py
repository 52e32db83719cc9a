"""Self-augmentation in float32 weights against bfloat16, side by side on the same passages: the
seconds a passage (cold caches, the exact encoder's batch of 8), and how much of the written text
is the same. Augmentation is most of the exact encoder's cost (benchmarks/exact.md), and greedy
generation is bound by reading the weights, which bfloat16 halves.

Each run writes to fresh temporary caches, so nothing cached is reused or disturbed.
Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/augment_dtype.py [--docs 8] [--skip 400]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hyperprag.adapter import content_hash
from hyperprag.augment import AugmentConfig, Augmenter
from hyperprag.data import load_questions
from hyperprag.models import load_base_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/squad.jsonl")
    parser.add_argument("--docs", type=int, default=8, help="distinct passages to augment (default 8: one batch)")
    parser.add_argument("--skip", type=int, default=400, help="questions to skip first (default 400: past the "
                        "benchmark and validation paragraphs)")
    args = parser.parse_args()

    model, tok = load_base_model()
    docs = list({content_hash(p.text): p for ex in load_questions(args.data)[args.skip:] for p in ex.passages}.values())
    docs = docs[: args.docs]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            augmenter = Augmenter(model, tok, AugmentConfig(dtype=dtype), cache=Path(tmp) / dtype)
            augmenter.generator  # the bf16 copy is made before the clock starts, as once per process
            t0 = time.perf_counter()
            augs = augmenter.augment(docs, progress=False)
            results[dtype] = (time.perf_counter() - t0, augs)
    (t32, a32), (t16, a16) = results["float32"], results["bfloat16"]
    print(f"{len(docs)} passages of {args.data} (after question {args.skip}), cold caches, batch 8")
    print("| dtype | seconds a passage | rewrites | QA pairs | complete |")
    print("|---|---|---|---|---|")
    for dtype, (t, augs) in results.items():
        print(f"| {dtype} | {t / len(docs):.1f} | {sum(len(a.rewrites) for a in augs)} "
              f"| {sum(len(a.qa) for a in augs)} | {sum(a.failed is None for a in augs)}/{len(augs)} |")
    same_rw = sum(x.rewrites == y.rewrites for x, y in zip(a32, a16))
    same_qa = sum(len(set(x.qa) & set(y.qa)) for x, y in zip(a32, a16))
    print(f"bfloat16 / float32 time: {t16 / t32:.2f} ({t32 / t16:.2f}x faster); identical rewrites "
          f"{same_rw}/{len(docs)}; QA pairs in both {same_qa} of {sum(len(a.qa) for a in a32)}")


if __name__ == "__main__":
    main()
