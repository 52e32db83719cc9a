"""Where do the rank options start a network? (benchmarks/adapter_rank.md)

For a checkpoint's design (default: the shipped v8), this makes adapters for the first ``--docs``
passages of ``--data`` from
- fresh networks of that design (seed 0), without the rank options, with ``row_bias``, and with
  ``row_bias`` and ``b_gain``: the start of a from-scratch run;
- the checkpoint warm-started into a network with those options, as ``training/train_hypernet.py``'s
  ``init_from`` does it: the start of a continued run,
and prints, per role, the share of each delta's energy beyond its top direction (0: rank 1;
trained LoRAs about 0.35) and, for the warm starts, how far the deltas moved from the
checkpoint's (relative Frobenius norm over all targets and passages).

    .venv/bin/python benchmarks/adapter_rank/fresh.py --data out/squad_broad.jsonl
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training"))
from train_hypernet import warm_start  # noqa: E402

from hyperprag.data import load_questions  # noqa: E402
from hyperprag.hyper_encoder import DEFAULT_CHECKPOINT, HyperEncoder  # noqa: E402
from hyperprag.hyper_objectives import distance_from_rank1  # noqa: E402
from hyperprag.hypernet import HyperNetConfig, HyperNetwork  # noqa: E402

OPTIONS = {"neither": {}, "row_bias": {"row_bias": True}, "row_bias + b_gain": {"row_bias": True, "b_gain": True}}


def energy_beyond_top(out: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Per role, the mean over passages and layers of the share of each delta's energy beyond its
    top direction (``adapter_rank.py``'s figure), all of a role's deltas at once; a zero delta
    counts as 0."""
    return {role: float(distance_from_rank1(a.double(), b.double()).square().mean()) for role, (a, b) in out.items()}


def relative_move(before: dict, after: dict) -> float:
    num = sum(((after[r][1] @ after[r][0] - b @ a) ** 2).sum() for r, (a, b) in before.items())
    return float((num / sum(((b @ a) ** 2).sum() for a, b in before.values())).sqrt())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help=f"default: {DEFAULT_CHECKPOINT.name}")
    ap.add_argument("--data", default="../shared/data/squad.jsonl")
    ap.add_argument("--docs", type=int, default=10)
    args = ap.parse_args()
    from hyperprag.models import load_base_model

    model, tokenizer = load_base_model()
    ckpt = HyperEncoder.from_pretrained(args.checkpoint, model, tokenizer)
    emb = ckpt.source.embed([ex.passages[0].text for ex in load_questions(args.data)[: args.docs]])
    design = ckpt.hypernet.config.to_dict() | {"row_bias": False, "b_gain": False}
    print("| start | options | energy beyond top: " + " / ".join(design["roles"]) + " | deltas moved |\n|---|---|---|---|")
    with torch.no_grad():
        before = ckpt.hypernet.eval()(emb)
        for name, kw in OPTIONS.items():
            torch.manual_seed(0)
            fresh = HyperNetwork(HyperNetConfig(**(design | {"center": False} | kw))).eval()
            print(f"| fresh | {name} | {' / '.join(f'{v:.3f}' for v in energy_beyond_top(fresh(emb)).values())} | |")
        for name, kw in list(OPTIONS.items())[1:]:
            torch.manual_seed(0)
            warm = HyperEncoder.create(model, ckpt.source, **{k: v for k, v in design.items() if k not in (
                "embed_dim", "num_layers", "roles", "reader")} | kw)
            warm_start(warm, str(args.checkpoint or DEFAULT_CHECKPOINT), model, tokenizer, ckpt.source)
            after = warm.hypernet.eval()(emb)
            print(f"| warm start | {name} | {' / '.join(f'{v:.3f}' for v in energy_beyond_top(after).values())} "
                  f"| {relative_move(before, after):.3f} |")


if __name__ == "__main__":
    main()
