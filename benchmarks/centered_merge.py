"""Merging top-k generated adapters: keep the part every document shares once, sum the rest?

Generated deltas share a common part (`benchmarks/topic_specificity.md`), so a plain sum of k
adapters adds it k times, and the default mean keeps it once but cuts each document's own part to
1/k. The middle way tried here:

    merged = lam * sum_i delta_i + (1 - k * lam) * c

where ``c`` is the mean generated delta over training paragraphs (rank ``--rank`` SVD per
module). ``lam = 1/k`` is the mean (``c`` drops out); ``lam = 1`` keeps ``c`` once and sums every
document's own part at full strength. Measured by answer loss (nats a token, teacher-forced,
closed-book prompt) on the held-out six-article SQuAD questions of ``topic_specificity.py``, each
merging the BM25 top-k of those 24 paragraphs, and with another question's top-k:

    .venv/bin/python benchmarks/centered_merge.py checkpoints/gemma-3-270m-token-seq-r128-tied-aug

``--data FILE --skip N --limit N`` takes a question file's slice instead, each question merging
the top-k of its own candidate passages, as ``hyperprag bench`` does without ``--corpus``.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from hyperprag.adapter import DocAdapter, content_hash
from hyperprag.data import Passage, load_questions
from hyperprag.diagnostics import answer_loss
from hyperprag.hyper_encoder import HyperEncoder
from hyperprag.merge import merge_adapters
from hyperprag.metrics import paired_bootstrap
from hyperprag.models import load_base_model
from hyperprag.retrieval import build_index, retrieve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from topic_specificity import DATA, choose, held_out  # noqa: E402

LAMBDAS = (0.5, 2 / 3, 1.0)


def mean_delta(adapters: Sequence[DocAdapter], rank: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module, the best rank-``rank`` (A, B) of the mean delta (scaling folded into B)."""
    out = {}
    for name in adapters[0].factors:
        a = torch.cat([ad.factors[name][0].float() for ad in adapters], 0)
        b = torch.cat([ad.factors[name][1].float() * ad.scaling for ad in adapters], 1)
        u, s, vh = torch.linalg.svd(b @ a / len(adapters), full_matrices=False)
        out[name] = (vh[:rank].contiguous(), (u[:, :rank] * s[:rank]).contiguous())
    return out


def centred_merge(adapters: Sequence[DocAdapter], lam: float,
                  common: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> DocAdapter:
    """``lam * sum(deltas) + (1 - k * lam) * common`` in low-rank form. The plain sum and mean are
    the library's ``merge_adapters``."""
    k, factors = len(adapters), {}
    for name in adapters[0].factors:
        a = [ad.factors[name][0].float() for ad in adapters] + [common[name][0]]
        b = [ad.factors[name][1].float() * ad.scaling * lam for ad in adapters] + [common[name][1] * (1 - k * lam)]
        factors[name] = (torch.cat(a, 0), torch.cat(b, 1))
    first = adapters[0]
    return DocAdapter(factors, 1.0, first.base_model, f"centred-{lam:.3g}", first.encoder_version,
                      content_hash(" ".join(ad.doc_hash for ad in adapters)))


def training_paragraphs(held: set[str], every: int, limit: int) -> list[Passage]:
    """Every ``every``-th distinct SQuAD paragraph the checkpoint trained on, in file order."""
    out, seen = [], set()
    for ex in load_questions(DATA):
        p = ex.passages[0]
        h = content_hash(p.text)
        if h in held or h in seen:
            continue
        seen.add(h)
        if len(seen) % every == 0:
            out.append(p)
    return out[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="hypernetwork checkpoint directory")
    ap.add_argument("--rank", type=int, default=16, help="rank of the common delta c")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--common-docs", type=int, default=200, help="training paragraphs c is the mean of (at most)")
    ap.add_argument("--data", type=Path, help="a question file instead of the six-article SQuAD set")
    ap.add_argument("--skip", type=int, default=0, help="with --data: questions left out first")
    ap.add_argument("--limit", type=int, default=100, help="with --data: questions taken")
    args = ap.parse_args()

    held = held_out(args.checkpoint)
    chosen = choose(load_questions(DATA), held, 6, 4, 3)
    model, tokenizer = load_base_model(None)
    encoder = HyperEncoder.from_pretrained(args.checkpoint, model, tokenizer)
    train = training_paragraphs(held, 10, args.common_docs)
    if args.data is None:
        paragraphs = [p for art in chosen for p, _ in art]
        questions = [ex for art in chosen for _, exs in art for ex in exs]
        index = build_index(paragraphs)
        top = [index.search(ex.question, args.top_k) for ex in questions]
    else:
        questions = load_questions(args.data)[args.skip:args.skip + args.limit]
        top = [retrieve(ex, args.top_k) for ex in questions]
        paragraphs = list({content_hash(p.text): p for ps in top for p in ps}.values())
    with torch.inference_mode():
        common = mean_delta([ad for i in range(0, len(train), 16) for ad in encoder.encode(train[i:i + 16])],
                            args.rank)
        adapters = {content_hash(p.text): ad for i in range(0, len(paragraphs), 16)
                    for p, ad in zip(paragraphs[i:i + 16], encoder.encode(paragraphs[i:i + 16]))}
    print(f"c: mean of {len(train)} training paragraphs ({len({p.title for p in train})} articles), rank {args.rank}")
    retrieved = [[adapters[content_hash(p.text)] for p in ps] for ps in top]
    found = sum(content_hash(ex.passages[0].text) in {a.doc_hash for a in r} for ex, r in zip(questions, retrieved))
    if len({frozenset(a.doc_hash for a in r) for r in retrieved}) < 2:
        sys.exit("every question retrieves the same passages: no other question's to swap in")
    rng = random.Random(0)
    wrong = []
    for r in retrieved:  # another question's top-k, not the same set
        other = rng.choice(retrieved)
        while {a.doc_hash for a in other} == {a.doc_hash for a in r}:
            other = rng.choice(retrieved)
        wrong.append(other)

    def losses(sets, merge):
        return [answer_loss(model, tokenizer, [ex], [merge(s)]) for ex, s in zip(questions, sets)]

    none = [answer_loss(model, tokenizer, [ex], [None]) for ex in questions]
    ci = lambda t: f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"  # noqa: E731
    print(f"{len(questions)} questions, own paragraph in the top {args.top_k} for {found}; "
          f"no adapter {statistics.mean(none):.3f} nats\n")
    print("| merge | lift | gain over the mean merge | median lift | lift with another question's top-k |")
    print("|---|---|---|---|---|")
    mean = losses(retrieved, lambda s: merge_adapters(s, "mean"))
    rows = [("mean (default)", lambda s: merge_adapters(s, "mean")), ("sum", lambda s: merge_adapters(s, "sum"))]
    rows += [(f"c + {lam:.2f} (sum - {args.top_k}c)", lambda s, lam=lam: centred_merge(s, lam, common))
             for lam in LAMBDAS]
    for label, merge in rows:
        own = mean if label.startswith("mean") else losses(retrieved, merge)
        other = losses(wrong, merge)
        median = statistics.median(n - o for n, o in zip(none, own))
        print(f"| {label} | {ci(paired_bootstrap(none, own))} | {ci(paired_bootstrap(mean, own))} | {median:+.3f} "
              f"| {statistics.mean(none) - statistics.mean(other):+.3f} |", flush=True)


if __name__ == "__main__":
    main()
