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
adapters of the same paragraphs (``--exact-store``, per recipe) are the yardstick: how much of
*their* lift survives the same swap.

Paragraphs are taken in file order, the first ``--articles`` articles with at least
``--paragraphs`` held-out paragraphs, and the first ``--questions`` questions of each: no choice
is made by results. The chosen paragraphs are written as a corpus for the exact encoder:

    .venv/bin/python benchmarks/topic_specificity.py CKPT --out out/topic            # writes paragraphs.jsonl
    .venv/bin/hyperprag encode --encoder exact --docs out/topic/paragraphs.jsonl --store out/topic-exact
    .venv/bin/hyperprag encode --encoder exact --recipe converged --docs out/topic/paragraphs.jsonl --store out/topic-exact-conv
    .venv/bin/python benchmarks/topic_specificity.py CKPT --out out/topic --exact-store out/topic-exact converged=out/topic-exact-conv
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
from hyperprag.cli_types import at_least
from hyperprag.data import Passage, QAExample, load_questions
from hyperprag.diagnostics import answer_loss, similarity_matrix
from hyperprag.exact import RECIPES, ExactEncoder
from hyperprag.hyper_encoder import HyperEncoder, provenance_file
from hyperprag.metrics import paired_bootstrap
from hyperprag.models import load_base_model, model_id
from hyperprag.store import AdapterStore

DATA = "../shared/data/squad.jsonl"
SWAPS = ("own", "same_article", "other_article")


def held_out(checkpoint: Path) -> set[str]:
    """The content hashes of the paragraphs ``checkpoint`` never trained on (exits if unknown)."""
    held_file = provenance_file(checkpoint, "heldout_hashes.json")
    if held_file is None:
        sys.exit(f"{checkpoint}: no heldout_hashes.json, so its held-out paragraphs are unknown")
    return set(json.loads(held_file.read_text()))


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


def losses(model, tokenizer, chosen, adapters: list[list[DocAdapter]] | None,
           in_context: bool = False) -> dict[str, dict[str, float]]:
    """Per-question answer loss with each swap (or, ``adapters`` None, with no adapter, and the
    paragraph in the prompt if ``in_context``: the lift an adapter as good as the prompt would give)."""
    plan = swaps(len(chosen), len(chosen[0]))
    names = (("in_context",) if in_context else ("none",)) if adapters is None else SWAPS
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    jobs = [(n, a, p, ex) for n in names for a, art in enumerate(chosen) for p, (_, exs) in enumerate(art)
            for ex in exs]
    for n, a, p, ex in tqdm(jobs, desc="answer loss", leave=False):
        adapter = None
        if adapters is not None:
            sa, sp = plan[n][(a, p)]
            adapter = adapters[sa][sp]
        out[n][ex.id] = answer_loss(model, tokenizer, [ex], [adapter], in_context=in_context)
    return out


def summarise(none: dict[str, float], rows: dict[str, dict[str, float]]) -> dict[str, object]:
    ids = list(none)
    base = [none[i] for i in ids]
    lift = {n: paired_bootstrap(base, [rows[n][i] for i in ids]) for n in SWAPS}
    own = lift["own"][0]
    return {"lift": lift,
            # Undefined when the own adapter does not lift the mean (the converged recipe's overfit
            # adapters): then own_minus, the paired gap, is the figure to read.
            "share_lost": {n: (own - lift[n][0]) / own if own > 0 else None for n in SWAPS[1:]},
            "own_minus": {n: paired_bootstrap([rows[n][i] for i in ids], [rows["own"][i] for i in ids])
                          for n in SWAPS[1:]},
            # A mean can hang on a few questions an overconfident adapter gets badly wrong.
            "questions_own_below_none": sum(rows["own"][i] < none[i] for i in ids),
            "by_question": rows}


def versus(first: dict, other: dict) -> dict[str, tuple[float, float, float]]:
    """Paired over questions: how much more of its lift ``first``'s own adapter loses to each swap
    than ``other``'s does. Two separate intervals that overlap at the edges do not say which is
    more specific; the paired difference does."""
    ids = list(first["by_question"]["own"])
    gap = lambda r, n: [r["by_question"][n][i] - r["by_question"]["own"][i] for i in ids]  # noqa: E731
    return {n: paired_bootstrap(gap(first, n), gap(other, n)) for n in SWAPS[1:]}


def table(results: dict[str, dict]) -> str:
    lines = ["| adapters | cosine within article | across articles | answer lift, own (nats) | same-article "
             "paragraph's | other article's | share of lift lost, same article | other article "
             "| own minus same-article (nats) | own minus other article | questions the own adapter helps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ci = lambda t: f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"  # noqa: E731
    for name, r in results.items():
        lf, sl, c = r["lift"], r["share_lost"], r["cosine"]
        share = lambda x: "n/a (no own lift)" if x is None else f"{x:.0%}"  # noqa: E731
        lines.append(f"| {name} | {c['within_article']:.3f} | {c['across_articles']:.3f} | {ci(lf['own'])} "
                     f"| {ci(lf['same_article'])} | {ci(lf['other_article'])} | {share(sl['same_article'])} "
                     f"| {share(sl['other_article'])} | {ci(r['own_minus']['same_article'])} "
                     f"| {ci(r['own_minus']['other_article'])} "
                     f"| {r['questions_own_below_none']} of {len(r['by_question']['own'])} |")
    names = list(results)
    if len(names) > 1:
        lines += ["", f"Paired over questions, {names[0]} minus each other row (nats; > 0: {names[0]} is "
                  "the more specific):", "",
                  "| versus | own minus same-article, difference | own minus other article, difference |",
                  "|---|---|---|"]
        for name in names[1:]:
            v = results[names[0]]["versus"][name]
            lines.append(f"| {name} | {ci(v['same_article'])} | {ci(v['other_article'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="hypernetwork checkpoint directory")
    ap.add_argument("--out", type=Path, required=True, help="directory for paragraphs.jsonl and results.json")
    ap.add_argument("--exact-store", nargs="*", default=[], metavar="[RECIPE=]STORE",
                    help="stores with exact adapters of OUT/paragraphs.jsonl, each trained with a named recipe "
                         "(default reference; e.g. converged=out/topic-exact-conv): a row each")
    # the swaps need another article and another paragraph of the same one: 2 of each at least
    ap.add_argument("--articles", type=at_least(2), default=6)
    ap.add_argument("--paragraphs", type=at_least(2), default=4, help="held-out paragraphs per article")
    ap.add_argument("--questions", type=at_least(1), default=3, help="questions per paragraph (its first)")
    args = ap.parse_args()

    chosen = choose(load_questions(DATA), held_out(args.checkpoint), args.articles, args.paragraphs, args.questions)
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
    in_context = losses(model, tokenizer, chosen, None, in_context=True)["in_context"]
    print(f"answer loss, mean over questions: no adapter {sum(none.values()) / len(none):.3f} nats, "
          f"paragraph in the prompt {sum(in_context.values()) / len(in_context):.3f}")
    sets: dict[str, list[list[DocAdapter]]] = {}
    encoder = HyperEncoder.from_pretrained(args.checkpoint, model, tokenizer)
    with torch.inference_mode():
        sets[f"generated ({args.checkpoint.name})"] = [encoder.encode([p for p, _ in art]) for art in chosen]
    for spec in args.exact_store:
        recipe, _, root = spec.rpartition("=")
        recipe = recipe or "reference"
        if recipe not in RECIPES:
            sys.exit(f"{spec}: unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        store, key = AdapterStore(root), ExactEncoder(model, tokenizer, RECIPES[recipe]).key
        exact = [[store.get(content_hash(p.text), key, model_id(model)) for p, _ in art] for art in chosen]
        missing = sum(x is None for art in exact for x in art)
        if missing:
            sys.exit(f"{root}: {missing} paragraphs lack an exact adapter ({key}); run hyperprag encode "
                     f"--encoder exact --recipe {recipe} --docs {args.out / 'paragraphs.jsonl'} --store {root}")
        sets[f"exact ({recipe} recipe)"] = exact
    results = {}
    for name, adapters in sets.items():
        r = summarise(none, losses(model, tokenizer, chosen, adapters))
        r["cosine"] = cosines(adapters)
        results[name] = r
    first = next(iter(results.values()))
    first["versus"] = {name: versus(first, r) for name, r in list(results.items())[1:]}
    (args.out / "results.json").write_text(json.dumps({"none_by_question": none, "in_context_by_question": in_context, **results}, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
