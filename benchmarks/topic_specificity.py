"""Is a generated adapter specific to its paragraph, or only to its topic?

The mean pairwise cosine of v8's deltas reads 0.43 on the 20 SQuAD paragraphs ``hyper_curve.py``
uses and -0.001 on 40 HotpotQA passages. Those 20 paragraphs are all from one article (Super
Bowl 50); the HotpotQA passages are about unrelated things. So the number says as much about the
passages as about the generator. This script separates the two, on held-out SQuAD paragraphs
grouped by article:

- the mean pairwise cosine of the deltas within an article and across articles;
- each question's answer loss (nats per token, teacher-forced, no passage in the prompt) with no
  adapter, its own paragraph's, another paragraph's **of the same article**, and a paragraph's of
  **another article**. A paragraph-specific adapter loses most of its lift with either; one that
  only carries the topic keeps it with the same-article one.

A same-article paragraph may hold the answer too (articles repeat their facts), so the exact
adapters of the same paragraphs (``--exact-store``, reference recipe) are the yardstick: how much
of *their* lift survives the same swap.

Paragraphs are taken in file order, the first ``--articles`` articles with at least
``--paragraphs`` held-out paragraphs, and the first ``--questions`` questions of each: no choice
is made by results. The chosen paragraphs are written as a corpus for the exact encoder:

    .venv/bin/python benchmarks/topic_specificity.py CKPT --out out/topic            # writes paragraphs.jsonl
    .venv/bin/hyperprag encode --encoder exact --docs out/topic/paragraphs.jsonl --store out/topic-exact
    .venv/bin/python benchmarks/topic_specificity.py CKPT --out out/topic --exact-store out/topic-exact
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperprag.adapter import DocAdapter, content_hash
from hyperprag.data import Passage, QAExample, load_questions
from hyperprag.diagnostics import answer_loss, similarity_matrix
from hyperprag.exact import ExactEncoder
from hyperprag.hyper_encoder import HyperEncoder, provenance_file
from hyperprag.metrics import paired_bootstrap
from hyperprag.models import load_base_model, model_id
from hyperprag.store import AdapterStore

DATA = "../shared/data/squad.jsonl"
SWAPS = ("own", "same_article", "other_article")


def choose(examples: Sequence[QAExample], held: set[str], articles: int, paragraphs: int,
           questions: int) -> list[list[tuple[Passage, list[QAExample]]]]:
    """[article][paragraph] -> (paragraph, its first questions), held-out paragraphs only."""
    by_article: dict[str, dict[str, tuple[Passage, list[QAExample]]]] = {}
    for ex in examples:
        p = ex.passages[0]
        h = content_hash(p.text)
        if h not in held:
            continue
        para = by_article.setdefault(p.title, {}).setdefault(h, (p, []))
        if len(para[1]) < questions:
            para[1].append(ex)
    full = [list(ps.values())[:paragraphs] for ps in by_article.values() if len(ps) >= paragraphs]
    if len(full) < articles:
        sys.exit(f"only {len(full)} articles have {paragraphs} held-out paragraphs; ask for fewer")
    return full[:articles]


def swaps(n_articles: int, n_paragraphs: int) -> dict[str, dict[tuple[int, int], tuple[int, int]]]:
    """Whose adapter each paragraph (article a, paragraph p) is answered with: the next paragraph
    of its article, or the same-numbered paragraph of the next article (fixed, not drawn)."""
    cells = [(a, p) for a in range(n_articles) for p in range(n_paragraphs)]
    return {"own": {c: c for c in cells},
            "same_article": {(a, p): (a, (p + 1) % n_paragraphs) for a, p in cells},
            "other_article": {(a, p): ((a + 1) % n_articles, p) for a, p in cells}}


def cosines(adapters: list[list[DocAdapter]]) -> dict[str, float]:
    """Mean pairwise cosine of the deltas, over pairs in one article and pairs in two."""
    flat = [x for art in adapters for x in art]
    label = [a for a, art in enumerate(adapters) for _ in art]
    sim = similarity_matrix(flat)
    within, across = [], []
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            (within if label[i] == label[j] else across).append(float(sim[i, j]))
    return {"within_article": sum(within) / len(within), "across_articles": sum(across) / len(across)}


def losses(model, tokenizer, chosen, adapters: list[list[DocAdapter]] | None) -> dict[str, dict[str, float]]:
    """Per-question answer loss with each swap (or, ``adapters`` None, with no adapter)."""
    plan = swaps(len(chosen), len(chosen[0]))
    names = ("none",) if adapters is None else SWAPS
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    jobs = [(n, a, p, ex) for n in names for a, art in enumerate(chosen) for p, (_, exs) in enumerate(art)
            for ex in exs]
    for n, a, p, ex in tqdm(jobs, desc="answer loss", leave=False):
        adapter = None
        if adapters is not None:
            sa, sp = plan[n][(a, p)]
            adapter = adapters[sa][sp]
        out[n][ex.id] = answer_loss(model, tokenizer, [ex], [adapter])
    return out


def summarise(none: dict[str, float], rows: dict[str, dict[str, float]]) -> dict[str, object]:
    ids = list(none)
    base = [none[i] for i in ids]
    lift = {n: paired_bootstrap(base, [rows[n][i] for i in ids]) for n in SWAPS}
    own = lift["own"][0]
    return {"lift": lift,
            "share_lost": {n: (own - lift[n][0]) / own if own > 0 else float("nan") for n in SWAPS[1:]},
            "own_minus": {n: paired_bootstrap([rows[n][i] for i in ids], [rows["own"][i] for i in ids])
                          for n in SWAPS[1:]}}


def table(results: dict[str, dict]) -> str:
    lines = ["| adapters | cosine within article | across articles | answer lift, own (nats) | same-article "
             "paragraph's | other article's | share of lift lost, same article | other article |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lf, sl, c = r["lift"], r["share_lost"], r["cosine"]
        ci = lambda t: f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"  # noqa: E731
        lines.append(f"| {name} | {c['within_article']:.3f} | {c['across_articles']:.3f} | {ci(lf['own'])} "
                     f"| {ci(lf['same_article'])} | {ci(lf['other_article'])} | {sl['same_article']:.0%} "
                     f"| {sl['other_article']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="hypernetwork checkpoint directory")
    ap.add_argument("--out", type=Path, required=True, help="directory for paragraphs.jsonl and results.json")
    ap.add_argument("--exact-store", type=Path, default=None,
                    help="a store with exact adapters (reference recipe) of OUT/paragraphs.jsonl: adds that row")
    ap.add_argument("--articles", type=int, default=6)
    ap.add_argument("--paragraphs", type=int, default=4, help="held-out paragraphs per article")
    ap.add_argument("--questions", type=int, default=3, help="questions per paragraph (its first)")
    args = ap.parse_args()

    held_file = provenance_file(args.checkpoint, "heldout_hashes.json")
    if held_file is None:
        sys.exit(f"{args.checkpoint}: no heldout_hashes.json, so its held-out paragraphs are unknown")
    held = set(json.loads(held_file.read_text()))
    chosen = choose(load_questions(DATA), held, args.articles, args.paragraphs, args.questions)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "paragraphs.jsonl", "w") as f:
        for art in chosen:
            for p, _ in art:
                f.write(json.dumps({"id": content_hash(p.text)[:16], "title": p.title, "text": p.text}) + "\n")
    print(f"{len(chosen)} articles x {len(chosen[0])} paragraphs, "
          f"{sum(len(e) for art in chosen for _, e in art)} questions: "
          + ", ".join(art[0][0].title for art in chosen))

    model, tokenizer = load_base_model(None)
    none = losses(model, tokenizer, chosen, None)["none"]
    sets: dict[str, list[list[DocAdapter]]] = {}
    encoder = HyperEncoder.from_pretrained(args.checkpoint, model, tokenizer)
    with torch.inference_mode():
        sets[f"generated ({args.checkpoint.name})"] = [encoder.encode([p for p, _ in art]) for art in chosen]
    if args.exact_store:
        store, key = AdapterStore(args.exact_store), ExactEncoder(model, tokenizer).key
        exact = [[store.get(content_hash(p.text), key, model_id(model)) for p, _ in art] for art in chosen]
        missing = sum(x is None for art in exact for x in art)
        if missing:
            sys.exit(f"{args.exact_store}: {missing} paragraphs lack an exact adapter ({key}); "
                     f"run hyperprag encode --encoder exact --docs {args.out / 'paragraphs.jsonl'} "
                     f"--store {args.exact_store}")
        sets["exact (reference recipe)"] = exact
    results = {}
    for name, adapters in sets.items():
        r = summarise(none, losses(model, tokenizer, chosen, adapters))
        r["cosine"] = cosines(adapters)
        results[name] = r
    (args.out / "results.json").write_text(json.dumps({"none_by_question": none, **results}, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
