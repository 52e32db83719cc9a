"""Building an encoder by name from command-line options: the one place the CLI learns about encoders."""
from __future__ import annotations

import argparse

from .augment import AugmentConfig
from .encoder import DocumentEncoder
from .exact import ExactEncoder, LoraTrainConfig

ENCODERS = ("exact", "hyper")


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument_group("generated encoder").add_argument(
        "--checkpoint", default=None,
        help="hypernetwork checkpoint directory (default: the shipped checkpoint for the default model)")
    g = p.add_argument_group("exact encoder (PRAG recipe defaults)")
    d = LoraTrainConfig()
    g.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    g.add_argument("--alpha", type=float, default=d.alpha, help=f"LoRA alpha (default {d.alpha:g})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr:g})")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs over the sequences (default {d.epochs})")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast while training")
    a = AugmentConfig()
    g.add_argument("--n-rewrites", type=int, default=a.n_rewrites, help=f"rewrites per document (default {a.n_rewrites})")
    g.add_argument("--n-qa", type=int, default=a.n_qa, help=f"QA pairs per document (default {a.n_qa})")


def build_encoder(name: str, model, tokenizer, args: argparse.Namespace) -> DocumentEncoder:
    if name == "exact":
        lora = LoraTrainConfig(rank=args.rank, alpha=args.alpha, lr=args.lr, epochs=args.epochs, bf16=args.bf16)
        return ExactEncoder(model, tokenizer, lora, AugmentConfig(n_rewrites=args.n_rewrites, n_qa=args.n_qa))
    if name == "hyper":
        from .hyper_encoder import HyperEncoder
        return HyperEncoder.from_pretrained(args.checkpoint, model, tokenizer)
    raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")
