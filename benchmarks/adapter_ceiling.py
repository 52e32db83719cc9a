"""How far can one r = 2 FFN LoRA go on a document's questions? Per-document optimised adapters.

The generated adapters close two thirds of the answer-loss gap to the passage in the prompt on the
100 held-out SQuAD questions, but only a fifth of the greedy first-word gap, and the trained (exact)
adapters do no better. Is that the generator, the objective, or the adapter itself? Here each of
the 20 paragraphs gets LoRAs optimised for it alone (``hyperprag.diagnostics.fit_adapter``: Adam,
full batch, from the exact encoder's shared initial factors), scored on the paragraph's held-out
questions at several step counts:

- ``oracle-kl``: distilled from the passage-in-prompt teacher on the *test questions themselves*.
  Not a method: whether an adapter of this rank and placement can hold what the prompt gives.
- ``fold-kl``: the same, trained on the paragraph's *other* human questions (two folds by position),
  each question scored with the adapter that never saw it: what a per-document adapter learnt
  from human questions carries to a new question about the same passage.
- ``self-kl``: distilled on the base model's own questions about the paragraph (the exact recipe's
  cached augmentation): the per-document optimum of the distillation objective without gold data.
- ``self-lm``: the exact recipe's data (passage, rewrite, QA pairs), cross-entropy, run far past
  its one epoch: is the trained path just undertrained?
- ``fold-kl-r8``: ``fold-kl`` at rank 8 (alpha 32): does rank limit the transfer?

References (variant ``reference``): no adapter, the passage in the prompt, the exact adapters (from
``--exact-store``) and the shipped checkpoint's own single adapter, all with the gold paragraph.
Each fitted adapter is saved as it is made, so a run resumes where it stopped. ``cosines`` compares
the deltas of every pair of kinds (generated, exact, and each fitted variant) paragraph by paragraph:
does a generated adapter point where training goes?

    .venv/bin/python benchmarks/adapter_ceiling.py run reference oracle-kl   # measure these
    .venv/bin/python benchmarks/adapter_ceiling.py table                     # the table, from what ran
    .venv/bin/python benchmarks/adapter_ceiling.py cosines                   # delta cosines between kinds
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperprag.adapter import DocAdapter, content_hash
from hyperprag.data import QAExample, load_questions, spread_questions
from hyperprag.diagnostics import (answer_loss, first_word, fit_adapter, similarity_matrix, specificity,
                                   wrong_document)
from hyperprag.evaluate import evaluate
from hyperprag.exact import ExactEncoder, LoraTrainConfig
from hyperprag.hyper_encoder import DEFAULT_CHECKPOINT, HyperEncoder
from hyperprag.hyper_objectives import answer_batch, qa_batches
from hyperprag.metrics import paired_bootstrap
from hyperprag.models import load_base_model, model_id
from hyperprag.prompts import build_prompt
from hyperprag.store import AdapterStore

DATA = "../shared/data/squad.jsonl"
STEPS = (10, 40)
LR = 1e-3  # 3e-3 diverged on the first paragraph (oracle KL 0.45 after 60 steps; 1e-3: 0.004)


@dataclass(frozen=True)
class Variant:
    rank: int
    data: str       # own | fold | self | self-doc
    objective: str  # kl | lm


VARIANTS = {"oracle-kl": Variant(2, "own", "kl"), "fold-kl": Variant(2, "fold", "kl"),
            "self-kl": Variant(2, "self", "kl"), "self-lm": Variant(2, "self-doc", "lm"),
            "fold-kl-r8": Variant(8, "fold", "kl")}


def folds(questions: list[QAExample], data: str) -> list[tuple[list[QAExample], list[QAExample]]]:
    """(trained on, scored on) pairs covering each question once: the paragraph's own questions
    for both, or two folds by position, each scored with the other's adapter."""
    if data != "fold":
        return [(questions, questions)]
    halves = [questions[0::2], questions[1::2]]
    return [(halves[1], halves[0]), (halves[0], halves[1])] if halves[1] else [([], questions)]


def training_batches(tokenizer, train: list[QAExample], scored: list[QAExample], variant: Variant, augmenter):
    """Student and teacher (None for cross-entropy) batches for one fit; None when there is nothing
    to train on (a paragraph whose augmentation found no QA pair)."""
    doc = scored[0].passages[0]
    if variant.data in ("own", "fold"):
        qa = [(ex.question, ex.answers[0]) for ex in train]
    else:
        aug = augmenter.augment([doc], progress=False)[0]
        qa = list(aug.qa)
        if variant.data == "self-doc":  # the exact recipe's sequences: passage and rewrites whole, QA in the prompt
            texts = [doc.text, *aug.rewrites]
            return answer_batch(tokenizer, [""] * len(texts) + [build_prompt(q) for q, _ in qa],
                                texts + [a for _, a in qa]), None
    if not qa:
        return None
    questions, answers = zip(*qa)
    student, teacher = qa_batches(tokenizer, [doc] * len(qa), questions, answers)
    return student, (teacher if variant.objective == "kl" else None)


def fit_file(out: Path, variant: str, doc_hash: str, fold: int, steps: int) -> Path:
    """Where one fit's adapter is cached (an empty file: nothing to train on)."""
    return out / variant / f"{doc_hash}-{fold}-{steps}.safetensors"


def fitted(model, tokenizer, name: str, paragraphs: dict[str, list[QAExample]], out: Path
           ) -> dict[int, tuple[list[DocAdapter | None], list[QAExample], list[float]]]:
    """Per step count: one adapter per scored question (None: nothing to train on), the questions
    in that order, and the final objective of each fit."""
    variant = VARIANTS[name]
    encoder = ExactEncoder(model, tokenizer, LoraTrainConfig(rank=variant.rank))
    init, scaling = encoder.init_factors, encoder.lora.scaling
    (out / name).mkdir(parents=True, exist_ok=True)
    result = {s: ([], [], []) for s in STEPS}
    for h, questions in tqdm(paragraphs.items(), desc=name):
        for k, (train, scored) in enumerate(folds(questions, variant.data)):
            files = {s: fit_file(out, name, h, k, s) for s in STEPS}
            if not all(f.exists() for f in files.values()):
                batches = training_batches(tokenizer, train, scored, variant, encoder.augmenter)
                fits = fit_adapter(model, batches[0], init, scaling, batches[1], STEPS, LR) if batches else {}
                for s, f in files.items():
                    if s in fits:
                        factors, loss = fits[s]
                        DocAdapter(factors, scaling, model_id(model), f"ceiling-{name}", "1", h,
                                   {"objective": str(loss)}).save(f)
                    else:
                        f.write_bytes(b"")  # nothing to train on: an empty file stands for no adapter
            for s, f in files.items():
                ad = DocAdapter.load(f) if f.stat().st_size else None
                loss = float(ad.extra["objective"]) if ad else float("nan")
                result[s][0].extend([ad] * len(scored))
                result[s][1].extend(scored)
                result[s][2].append(loss)
    return result


def measure(model, tokenizer, examples: list[QAExample], adapters: list[DocAdapter | None],
            in_context: bool = False) -> dict:
    """Answer loss, first word (loss, greedy right) and greedy F1, each question with its adapter
    and its gold paragraph (in the prompt with ``in_context``, else behind the adapter)."""
    gold = [[ex.passages[0]] for ex in examples]
    if in_context:
        answered = evaluate(model, tokenizer, examples, "rag", gold, progress=False)
    elif all(a is None for a in adapters):
        answered = evaluate(model, tokenizer, examples, "closed", gold, progress=False)
    else:  # a question with no adapter (None) is answered closed-book in the same batch
        answered = evaluate(model, tokenizer, examples, "prag", gold, progress=False, adapters=adapters)
    loss = answer_loss(model, tokenizer, examples, adapters, in_context=in_context)
    first = first_word(model, tokenizer, examples, adapters, in_context=in_context)
    return {"n": len(examples), "loss": loss, "first_loss": first[0], "first_right": first[1],
            "f1": answered["f1"], "em": answered["em"],
            "predictions": [{k: r[k] for k in ("id", "prediction", "f1")} for r in answered["predictions"]]}


def reference_adapters(model, tokenizer, examples: list[QAExample], exact_store: Path, checkpoint: Path) -> dict:
    """Per question, its paragraph's exact (reference recipe) adapter and generated adapter."""
    hashes = [content_hash(ex.passages[0].text) for ex in examples]
    store, key = AdapterStore(exact_store), ExactEncoder(model, tokenizer).key
    exact = [store.get(h, key, model_id(model)) for h in hashes]
    if any(a is None for a in exact):
        raise SystemExit(f"{exact_store}: {sum(a is None for a in exact)} questions lack an exact adapter ({key})")
    held = set(json.loads((checkpoint / "heldout_hashes.json").read_text()))
    if set(hashes) - held:
        raise SystemExit(f"{len(set(hashes) - held)} evaluation paragraphs were in {checkpoint}'s training pool")
    docs = list({h: ex.passages[0] for h, ex in zip(hashes, examples)}.items())
    by_hash = dict(zip([h for h, _ in docs], HyperEncoder.from_pretrained(checkpoint, model, tokenizer)
                       .encode([d for _, d in docs])))
    return {"exact": exact, "generated": [by_hash[h] for h in hashes]}


def reference(model, tokenizer, examples: list[QAExample], rows: dict, exact_store: Path, checkpoint: Path) -> dict:
    """No adapter, the passage in the prompt, and the exact and generated adapters with their
    wrong-document ablation; ``rows`` holds what an earlier run measured."""
    none = [None] * len(examples)
    if "none" not in rows:
        rows["none"] = measure(model, tokenizer, examples, none)
    if "in_context" not in rows:
        rows["in_context"] = measure(model, tokenizer, examples, none, in_context=True)
    if not all("wrong" in rows.get(k, {}) for k in ("exact", "generated")):
        for name, adapters in reference_adapters(model, tokenizer, examples, exact_store, checkpoint).items():
            if name not in rows:
                rows[name] = measure(model, tokenizer, examples, adapters)
            rows[name]["wrong"] = measure(model, tokenizer, examples, wrong_document(adapters))
    return rows


def run(names: list[str], out: Path, exact_store: Path, checkpoint: Path) -> None:
    model, tokenizer = load_base_model(None)
    examples = spread_questions(load_questions(DATA), 100, 5)
    paragraphs: dict[str, list[QAExample]] = defaultdict(list)
    for ex in examples:
        paragraphs[content_hash(ex.passages[0].text)].append(ex)
    for name in names:
        path = out / f"{name}.json"
        rows = json.loads(path.read_text()) if path.exists() else {}
        if name == "reference":
            path.write_text(json.dumps(reference(model, tokenizer, examples, rows, exact_store, checkpoint), indent=1))
        else:
            for step, (adapters, scored, losses) in fitted(model, tokenizer, name, paragraphs, out).items():
                row = rows.get(f"{name}@{step}")
                if row is None:
                    row = rows[f"{name}@{step}"] = measure(model, tokenizer, scored, adapters)
                    trained = [x for x in losses if x == x]  # nan: a fit with nothing to train on
                    row["objective"] = sum(trained) / len(trained)
                    row["untrained_questions"] = sum(a is None for a in adapters)
                if step == max(STEPS) and "wrong" not in row and None not in adapters:
                    # Specificity: each question with another paragraph's adapter (the bench's draw).
                    row["wrong"] = measure(model, tokenizer, scored, wrong_document(adapters))
                path.write_text(json.dumps(rows, indent=1))  # after each step's measures: a crash keeps them


def own_other(sim: torch.Tensor) -> tuple[float, float, int]:
    """From the cosines of one kind's adapters (rows) with another's (columns), both in the same
    paragraph order: the mean for the same paragraph, for different ones, and in how many rows the
    same paragraph's is the largest."""
    k = sim.shape[0]
    other = (sim.sum() - sim.diagonal().sum()) / (k * (k - 1))
    best = sum(int(sim[i, i] > torch.cat([sim[i, :i], sim[i, i + 1:]]).max()) for i in range(k))
    return float(sim.diagonal().mean()), float(other), best


def cosines(out: Path, exact_store: Path, checkpoint: Path) -> None:
    model, tokenizer = load_base_model(None)
    examples = list({content_hash(ex.passages[0].text): ex for ex in spread_questions(load_questions(DATA), 100, 5)}.values())
    kinds = dict(reference_adapters(model, tokenizer, examples, exact_store, checkpoint))
    for name, variant in VARIANTS.items():
        files = [fit_file(out, name, content_hash(ex.passages[0].text), 0, max(STEPS)) for ex in examples]
        if variant.rank == 2 and all(f.exists() and f.stat().st_size for f in files):
            kinds[f"{name}@{max(STEPS)}"] = [DocAdapter.load(f) for f in files]
    names, k = list(kinds), len(examples)
    sim = similarity_matrix([a for n in names for a in kinds[n]])
    print(f"{k} paragraphs, deltas compared module by module and summed (low-rank form)\n")
    print("| kinds | cosine, same paragraph | different paragraphs | paragraphs whose own is closest |")
    print("|---|---|---|---|")
    for i, x in enumerate(names):
        for j, y in enumerate(names[i + 1:], i + 1):
            own, other, best = own_other(sim[i * k:(i + 1) * k, j * k:(j + 1) * k])
            print(f"| {x} x {y} | {own:.4f} | {other:.4f} | {best}/{k} |")


def table(out: Path) -> None:
    rows = {}
    for path in sorted(out.glob("*.json")):
        rows.update(json.loads(path.read_text()))
    if "none" not in rows or "in_context" not in rows:
        raise SystemExit(f"{out}: run the reference variant first")
    none, ctx = rows["none"], rows["in_context"]
    order = ["none", "exact", "generated"] + sorted(k for k in rows if "@" in k) + ["in_context"]
    print("| adapter | answer loss | share of gap | first word loss | share of gap | first word right "
          "| F1 | share of F1 gap | F1 minus generated's [95% CI] | F1, another paragraph's adapter (share of lift lost) "
          "| objective at the end |")
    print("|---" * 11 + "|")
    generated = {p["id"]: p["f1"] for p in rows["generated"]["predictions"]} if "generated" in rows else None
    for key in (k for k in order if k in rows):
        r = rows[key]
        share = lambda m: (none[m] - r[m]) / (none[m] - ctx[m])  # noqa: E731
        f1_share = (r["f1"] - none["f1"]) / (ctx["f1"] - none["f1"])
        objective = f"{r['objective']:.3f}" if "objective" in r else ""
        paired, wrong = "", ""
        if "wrong" in r:
            lost = specificity(none["f1"], r["f1"], r["wrong"]["f1"])["share_of_lift_lost"]
            wrong = f"{r['wrong']['f1']:.3f} ({lost:.2f})"
        if generated and key != "generated":  # paired by question: the fold variants score them in another order
            mean, lo, hi = paired_bootstrap([p["f1"] for p in r["predictions"]],
                                            [generated[p["id"]] for p in r["predictions"]])
            paired = f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        print(f"| {key} | {r['loss']:.3f} | {share('loss'):.2f} | {r['first_loss']:.3f} | {share('first_loss'):.2f} "
              f"| {round(r['first_right'] * r['n'])}/{r['n']} | {r['f1']:.3f} | {f1_share:.2f} | {paired} | {wrong} | {objective} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "table", "cosines"))
    ap.add_argument("variants", nargs="*", help=f"with run: reference, {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--out", type=Path, default=Path("out/ceiling"))
    ap.add_argument("--exact-store", type=Path, default=Path("out/exact-store"),
                    help="exact adapters of the 20 paragraphs (the reference row)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="hypernetwork (default: the shipped one)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "table":
        return table(args.out)
    if args.command == "cosines":
        return cosines(args.out, args.exact_store, args.checkpoint or DEFAULT_CHECKPOINT)
    unknown = set(args.variants) - set(VARIANTS) - {"reference"}
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from reference, {', '.join(VARIANTS)}")
    run(args.variants or ["reference", *VARIANTS], args.out, args.exact_store, args.checkpoint or DEFAULT_CHECKPOINT)


if __name__ == "__main__":
    main()
