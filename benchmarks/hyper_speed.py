"""Cost of parameterising one document: the exact encoder against hypernetwork checkpoints, side by
side in one run, so that the ratios compare like with like (same machine, threads and documents).

Exact: augmentation from a cold cache plus LoRA training, median over ``--docs`` documents (about
80 s each on one CPU thread). Hyper: the bench's own timing (``hyperprag.bench.hyper_cost``), per
document at batch 1 and at batch 64, and the batch-64 time split into the embedding lookup and the
hypernetwork. Each checkpoint is timed before and after the exact encoder, and the mean is the
figure (the machine's speed drifts over the minutes the exact encoder takes). The documents are
the first passages of ``--data``, as the bench times the first ones it retrieves; their token
counts are printed because the attention reader's cost grows with them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hyper_speed.py --checkpoints checkpoints/gemma-3-270m-token-seq runs/x/final
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hyperprag.augment import GENERATION_DTYPES, AugmentConfig
from hyperprag.bench import BenchSettings, encoder_cost, hyper_cost
from hyperprag.data import passages_of
from hyperprag.exact import ExactEncoder
from hyperprag.hyper_encoder import DEFAULT_CHECKPOINT, HyperEncoder
from hyperprag.models import load_base_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", type=Path, default=[DEFAULT_CHECKPOINT])
    ap.add_argument("--data", default="../shared/data/hotpotqa.jsonl", help="question or corpus file")
    ap.add_argument("--docs", type=int, default=2, help="documents timed (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats, medians (default 3)")
    ap.add_argument("--no-exact", action="store_true", help="time the checkpoints only")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--augment-dtype", choices=GENERATION_DTYPES, default=AugmentConfig.dtype,
                    help="the exact encoder's augmentation dtype (default float32, the encoder's default)")
    args = ap.parse_args()

    model, tokenizer = load_base_model()
    docs = passages_of(args.data)[: args.docs]
    tokens = [len(tokenizer(d.text, add_special_tokens=False)["input_ids"]) for d in docs]
    print(f"{len(docs)} documents of {args.data}, {tokens} tokens; torch threads {torch.get_num_threads()}")
    settings = BenchSettings(cost_docs=0 if args.no_exact else args.docs, repeats=args.repeats)
    exact = {} if args.no_exact else {"exact": ExactEncoder(model, tokenizer, augment=AugmentConfig(dtype=args.augment_dtype))}
    results = {"documents": tokens, "threads": torch.get_num_threads(), "augment_dtype": args.augment_dtype,
               "exact": None, "hyper": {}}
    hypers = {str(c): HyperEncoder.from_pretrained(c, model, tokenizer) for c in args.checkpoints}
    # This machine's speed drifts over minutes (shared cores), and the exact encoder takes minutes:
    # the checkpoints are timed before it and after it, and the mean of the two is the figure.
    before = {c: hyper_cost(h, docs, args.repeats) for c, h in hypers.items()}
    if exact:
        results["exact"] = encoder_cost(model, tokenizer, exact, docs, settings)["exact"]
        print(f"exact: {results['exact']['total']:.1f} s/doc (augment {results['exact']['augment']:.1f}, "
              f"train {results['exact']['train']:.1f})")
    after = {c: hyper_cost(h, docs, args.repeats) for c, h in hypers.items()}
    print(f"{'checkpoint':<44} {'params':>10} {'batch1 ms':>10} {'batch64 ms':>11} {'embed':>6} {'net':>6}"
          f" {'b1 before/after':>16}" + ("   exact/hyper b1, b64" if exact else ""))
    for ckpt, hyper in hypers.items():
        cost = {k: (before[ckpt][k] + after[ckpt][k]) / 2 for k in before[ckpt]}
        cost |= {"before": before[ckpt], "after": after[ckpt], "parameters": hyper.hypernet.num_parameters()}
        results["hyper"][ckpt] = cost
        ratio = ""
        if exact:
            total = results["exact"]["total"]
            ratio = f"   {total / cost['batch1']:,.0f}x, {total / cost['batch64']:,.0f}x"
        spread = f"{before[ckpt]['batch1'] * 1e3:.1f}/{after[ckpt]['batch1'] * 1e3:.1f}"
        print(f"{ckpt:<44} {cost['parameters']:>10,} {cost['batch1'] * 1e3:>10.1f} {cost['batch64'] * 1e3:>11.1f} "
              f"{cost['embed64'] * 1e3:>6.1f} {cost['hypernet64'] * 1e3:>6.1f} {spread:>16}{ratio}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
