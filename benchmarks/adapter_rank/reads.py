"""Do the attention reader's ranks read different tokens? (benchmarks/adapter_rank.md)

B column k of a generated adapter is one shared map applied to rank k's read (its attention-weighted
mix of the normalised tokens), so B columns can differ only where the ranks' reads do. For a tied
reader of rank 2, this prints, over the first ``--docs`` passages of ``--data``: the mean and least
cosine between the rank-0 and rank-1 reads of each layer; for scale, between the rank-0 reads of the
first and last layers of a document and of one layer for consecutive documents; and the attention's
entropy as a share of the uniform attention's.

    .venv/bin/python benchmarks/adapter_rank/reads.py v8 runs/s34_rb/final --data out/squad_broad.jsonl
"""
from __future__ import annotations

import argparse

import torch

from hyperprag.data import load_questions
from hyperprag.hyper_encoder import HyperEncoder
from hyperprag.models import load_base_model


def rank_reads(encoder: HyperEncoder, texts: list[str]) -> dict[str, float]:
    net, cfg = encoder.hypernet, encoder.hypernet.config
    if cfg.reader != "attention" or not cfg.tie_reads or cfg.rank != 2:
        raise SystemExit("this reads a tied attention reader of rank 2")
    emb = encoder.source.embed(texts)
    with torch.no_grad():
        weights, reads = net.reads(emb, net._reader_plan(centred=cfg.center))   # the queries: either way
        weights = weights.view(len(texts), cfg.num_layers, cfg.rank, -1)   # (docs, layers, ranks, tokens)
        reads = reads[:, 0]                                                 # (docs, layers, ranks, d)
        cos = torch.nn.functional.cosine_similarity
        ranks = cos(reads[:, :, 0], reads[:, :, 1], dim=-1)
        entropy = -(weights.clamp_min(1e-12).log() * weights).sum(-1)
        uniform = (emb.norm(dim=-1) > 0).sum(-1).float().log()[:, None, None]
        return {"ranks": ranks.mean().item(), "ranks_least": ranks.min().item(),
                "layers": cos(reads[:, 0, 0], reads[:, -1, 0], dim=-1).mean().item(),
                "documents": cos(reads[:-1, 0, 0], reads[1:, 0, 0], dim=-1).mean().item(),
                "entropy": (entropy / uniform).mean().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="checkpoint dirs; v8 is the shipped one")
    ap.add_argument("--data", default="../shared/data/squad.jsonl")
    ap.add_argument("--docs", type=int, default=20)
    args = ap.parse_args()
    model, tokenizer = load_base_model()
    texts = [ex.passages[0].text for ex in load_questions(args.data)[: args.docs]]
    print("| checkpoint | mean cos, rank-0 and rank-1 reads | least | first and last layer | consecutive documents "
          "| attention entropy / uniform |\n|---|---|---|---|---|---|")
    for ckpt in args.checkpoints:
        enc = HyperEncoder.from_pretrained(None if ckpt == "v8" else ckpt, model, tokenizer)
        f = rank_reads(enc, texts)
        print(f"| {ckpt} | {f['ranks']:.4f} | {f['ranks_least']:.4f} | {f['layers']:.4f} | {f['documents']:.4f} "
              f"| {f['entropy']:.3f} |")


if __name__ == "__main__":
    main()
