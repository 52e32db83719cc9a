"""Building an encoder by name from command-line options: the one place the CLI learns about encoders."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .augment import GENERATION_DTYPES, AugmentConfig
from .cli_types import at_least, positive_float
from .encoder import DocumentEncoder
from .exact import RECIPES, ExactEncoder, LoraTrainConfig

ENCODERS = ("exact", "hyper")


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument_group("generated encoder").add_argument(
        "--checkpoint", default=None,
        help="hypernetwork checkpoint directory (default: the shipped checkpoint for the default model)")
    g = p.add_argument_group("exact encoder (a named recipe; the options below override its values)")
    d = RECIPES["reference"]
    recipes = "; ".join(f"{n}: lr {r.lr:g}, {r.epochs} epoch(s), batch {r.batch_size}" for n, r in RECIPES.items())
    g.add_argument("--recipe", choices=list(RECIPES), default="reference",
                   help=f"training recipe (default reference, PRAG's; converged trains on the same data until "
                        f"the passage is held, see benchmarks/exact.md). {recipes}")
    g.add_argument("--rank", type=at_least(1), default=None, help=f"LoRA rank (default {d.rank})")
    g.add_argument("--alpha", type=positive_float, default=None, help=f"LoRA alpha (default {d.alpha:g})")
    g.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the recipe's)")
    g.add_argument("--epochs", type=at_least(1), default=None, help="epochs over the sequences (default: the recipe's)")
    g.add_argument("--train-batch-size", type=at_least(1), default=None,
                   help="sequences per training step (default: the recipe's)")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast while training")
    a = AugmentConfig()
    g.add_argument("--n-rewrites", type=at_least(0), default=a.n_rewrites, help=f"rewrites per document (default {a.n_rewrites})")
    g.add_argument("--n-qa", type=at_least(0), default=a.n_qa, help=f"QA pairs per document (default {a.n_qa})")
    add_augment_dtype(g)


def add_augment_dtype(group) -> None:
    group.add_argument("--augment-dtype", choices=GENERATION_DTYPES, default=AugmentConfig.dtype,
                       help="the weights' dtype while the model writes rewrites and QA pairs (default float32); "
                            "bfloat16 writes about twice as fast on a CPU with bf16 support, with somewhat "
                            "different text, so it has its own cache and store key")


def exact_config(args: argparse.Namespace) -> LoraTrainConfig:
    """The chosen recipe with every option given on the command line put over it."""
    given = {"rank": args.rank, "alpha": args.alpha, "lr": args.lr, "epochs": args.epochs,
             "batch_size": args.train_batch_size}
    return replace(RECIPES[args.recipe], bf16=args.bf16, **{k: v for k, v in given.items() if v is not None})


def build_encoder(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  args: argparse.Namespace) -> DocumentEncoder:
    if name == "exact":
        lora = exact_config(args)
        return ExactEncoder(model, tokenizer, lora, AugmentConfig(n_rewrites=args.n_rewrites, n_qa=args.n_qa,
                                                                  dtype=args.augment_dtype))
    if name == "hyper":
        from .hyper_encoder import HyperEncoder
        return HyperEncoder.from_pretrained(args.checkpoint, model, tokenizer)
    raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")
