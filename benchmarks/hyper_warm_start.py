"""Generated adapters as a starting point: the exact encoder's training, started from the
hypernetwork's adapter for the document instead of the shared initial LoRA. A probe of the middle
ground between the two encoders: a few seconds of training on the passage alone (no augmentation:
nothing generated) on top of the milliseconds of the hypernetwork.

Runs `hyperprag bench` with every argument given, with its `exact` encoder (the `prag` modes)
replaced by the warm-started one, which stores its adapters under its own key and merges them by
the mean, as generated adapters are merged (they share a common part that a sum would triple).

    .venv/bin/python benchmarks/hyper_warm_start.py --data ../shared/data/squad.jsonl --skip 378 --limit 50 \\
        --per-doc 5 --modes closed rag prag --recipe converged --n-rewrites 0 --n-qa 0 --cost-docs 0 \\
        --latency-queries 2 --repeats 1 --similarity-docs 0 --store out/val-store --out out/val_squad_warm
"""
from __future__ import annotations

import sys

import hyperprag.encoders as encoders
from hyperprag.adapter import content_hash
from hyperprag.cli import main
from hyperprag.exact import ExactEncoder
from hyperprag.hyper_encoder import HyperEncoder


class WarmStartExact(ExactEncoder):
    """The exact encoder with each document's training started from its generated adapter."""

    merge = "mean"

    def __init__(self, model, tokenizer, lora, augment, hyper: HyperEncoder):
        super().__init__(model, tokenizer, lora, augment)
        if hyper.hypernet.config.scaling != self.lora.scaling:
            raise SystemExit(f"the checkpoint's LoRA scaling {hyper.hypernet.config.scaling} is not the recipe's "
                             f"{self.lora.scaling}")
        self.hyper, self._starts = hyper, []

    @property
    def key(self) -> str:
        return f"exact-warm-v1-{content_hash(super().key + self.hyper.key)[:10]}"

    def encode(self, docs, progress=False):
        self._starts = [a.factors for a in self.hyper.encode(docs)]  # ExactEncoder.encode trains in this order
        return super().encode(docs, progress)

    def train(self, seqs):
        self.init_factors = self._starts.pop(0)
        return super().train(seqs)


def build_encoder(name, model, tokenizer, args):
    if name != "exact":
        return plain_build(name, model, tokenizer, args)
    exact = plain_build("exact", model, tokenizer, args)
    return WarmStartExact(model, tokenizer, exact.lora, exact.augmenter.config,
                          HyperEncoder.from_pretrained(args.checkpoint, model, tokenizer))


plain_build = encoders.build_encoder
encoders.build_encoder = build_encoder

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
