"""Learning curve of a hypernetwork run: does more training lift held-out answers, and specifically?

For every snapshot of a run (``out/step-N`` from ``snapshot_every``, and ``out/final``) it measures,
on the 100 held-out SQuAD questions the ablation uses (20 paragraphs never trained on):
- the answer loss (nats per answer token, teacher-forced) with no adapter, with the question's own
  document's generated adapter, with another document's (the bench's wrong-document draw) and with
  its own summed with two other documents' (as a top-3 retrieval merges them; a part all adapters
  share is then added three times), and averaged with them (``--merge mean``).
  Loss moves long before greedy F1 does, so it shows a trend 100 questions of F1 cannot. The
  yardstick is the loss with the passage in the prompt (rag's prompt): *share of the in-context
  gap* is how much of the way from no adapter to it an adapter goes;
- the same for the first answer word alone (its loss, and how often greedy decoding would pick it):
  greedy F1 hangs on that word, and the mean loss can fall while it stays wrong;
- the mean pairwise cosine of the 20 generated deltas (collapse: near 1). The 20 paragraphs are all
  from one article (Super Bowl 50), so this is a within-topic figure: v8 reads 0.43 here and -0.001
  on unrelated HotpotQA passages (benchmarks/topic_specificity.md);
- the passage loss of the 20 paragraphs (their first 64 words after the title, not in the prompt)
  with their own adapter and with another's: does an adapter hold its own passage? And on how
  many of the 20 does the own adapter beat the other's?
- with ``--f1``, greedy F1 via ``hyperprag bench --modes closed hyper`` (as in hyper_ablation.py);
- with ``--exact-store``, the same losses for the trained (exact, reference recipe) adapters of
  those paragraphs: the yardstick in nats;
- with ``--against CURVE:ROW``, each row's own-adapter loss minus another curve's row, question by
  question with a paired bootstrap interval: two runs' means a few hundredths apart are often noise.

    .venv/bin/python benchmarks/hyper_curve.py runs/squad_minilm_long [--f1 [STEP ...]] [--exact-store out/exact-store]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import torch
from hyper_ablation import bench
from tqdm.auto import tqdm

from hyperprag.adapter import content_hash
from hyperprag.data import load_questions, spread_questions
from hyperprag.diagnostics import (
    answer_loss,
    distractors,
    first_word,
    mean_pairwise_cosine,
    passage_loss,
    specificity,
    wrong_document,
)
from hyperprag.exact import ExactEncoder
from hyperprag.hyper_encoder import HyperEncoder
from hyperprag.merge import merge_adapters
from hyperprag.metrics import paired_bootstrap
from hyperprag.models import load_base_model, model_id
from hyperprag.store import AdapterStore

DATA = "../shared/data/squad.jsonl"
# A row of the curve.
MEASURES = ("own", "wrong", "merged3", "merged3_mean", "cosine", "doc_own", "doc_wrong", "doc_wins",
            "first_own", "first_wrong", "own_by_question")


def complete(row: dict) -> bool:
    return all(m in row for m in MEASURES)


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """(step, dir) in training order; ``final`` carries the run's last step. A checkpoint directory
    itself (the shipped one) is one snapshot, at the last step of its training log."""
    if (run / "model.safetensors").exists():
        # shipped (its log); a run's final/ (its own step, or before session 32 the run's state)
        log, own, state = run / "training_log.jsonl", run / "step.json", run.parent / "state" / "step.json"
        step = (json.loads(log.read_text().splitlines()[-1])["step"] if log.exists()
                else json.loads(own.read_text())["step"] if own.exists()
                else json.loads(state.read_text())["step"] if state.exists() else 0)
        return [(step, run)]
    # config.json lands last in a checkpoint: a snapshot without it is still being written, or was cut
    found = [(int(m.group(1)), p) for p in run.glob("step-*")
             if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / "config.json").exists()]
    final = run / "final"
    if (final / "config.json").exists():
        # its own step (since session 32); before, the state's, which a resumed run has moved past
        own = final / "step.json"
        last = json.loads((own if own.exists() else run / "state" / "step.json").read_text())["step"]
        found.append((last, final))
    return sorted(found)


def weights_digest(checkpoint: Path) -> str:
    """Names a snapshot's weights, so that a cached row is never another checkpoint's."""
    h = hashlib.sha256()
    with (checkpoint / "model.safetensors").open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:12]


def cached_row(rows: dict, key: str, step: int, digest: str) -> dict:
    """The cache's row for a snapshot, started afresh where the cached one is another checkpoint's
    (or from before rows named their weights)."""
    if rows.get(key, {}).get("weights") != digest:
        rows[key] = {"step": step, "weights": digest}
    return rows[key]


def default_out(run: Path) -> Path:
    """out/curve/RUN; a run's final/ or step-N/ given alone is named with its run's, so that two
    runs' final/ do not share one cache."""
    name = run.resolve().name
    if name == "final" or re.fullmatch(r"step-\d+", name):
        name = f"{run.resolve().parent.name}-{name}"
    return Path("out/curve") / name


def heldout_file(run: Path) -> Path:
    """The held-out paragraphs' hashes: a shipped checkpoint carries them, a run's snapshots
    (``final/``, ``step-N/``) find them in the run's directory above."""
    for d in (run, run.parent):
        if (d / "heldout_hashes.json").exists():
            return d / "heldout_hashes.json"
    sys.exit(f"{run}: no heldout_hashes.json here or in {run.parent}, so the evaluation paragraphs "
             f"cannot be checked to be held out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a training run's out dir (with step-N/ and final/), or a checkpoint dir")
    ap.add_argument("--f1", nargs="*", type=int, default=None, metavar="STEP",
                    help="also run the bench (greedy F1, ~5 min a snapshot) at these steps (none given: all)")
    ap.add_argument("--exact-store", type=Path, default=None,
                    help="a store holding exact adapters (default recipe) of the 20 paragraphs: adds a reference row")
    ap.add_argument("--against", default=None, metavar="CURVE:ROW",
                    help="another run's curve.json and one of its rows (e.g. out/curve/v7/curve.json:final@489): "
                         "each row's own-adapter loss minus that row's, paired by question")
    ap.add_argument("--out", type=Path, default=None, help="default: out/curve/RUN_NAME")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where the base model runs (default: cuda when there is one)")
    args = ap.parse_args()
    points = snapshots(args.run)
    if not points:
        sys.exit(f"{args.run}: no snapshots (step-N/ or final/ with model.safetensors)")
    out = args.out or default_out(args.run)
    out.mkdir(parents=True, exist_ok=True)

    model, tokenizer = load_base_model(None, device=args.device)
    examples = spread_questions(load_questions(DATA), 100, 5)
    held = set(json.loads(heldout_file(args.run).read_text()))
    doc_hashes = [content_hash(ex.passages[0].text) for ex in examples]
    leaked = set(doc_hashes) - held
    if leaked:
        sys.exit(f"{len(leaked)} evaluation paragraphs were in {args.run}'s training pool")
    docs = list(dict(zip(doc_hashes, (ex.passages[0] for ex in examples))).values())
    cache = out / "curve.json"
    rows = json.loads(cache.read_text()) if cache.exists() else {}
    if "none" not in rows:
        rows["none"] = answer_loss(model, tokenizer, examples, [None] * len(examples))
    if "in_context" not in rows:
        rows["in_context"] = answer_loss(model, tokenizer, examples, [None] * len(examples), in_context=True)
    for key, kw in (("first_none", {}), ("first_in_context", {"in_context": True})):
        if key not in rows:
            rows[key] = first_word(model, tokenizer, examples, [None] * len(examples), **kw)
    if "doc_none" not in rows:
        rows["doc_none"] = passage_loss(model, tokenizer, docs, [None] * len(docs))

    def point(row: dict, own: list) -> None:
        """Fill in the measures ``row`` lacks (a row cached before a measure was added gets just that
        one): answer loss with each question's own adapter, with another document's, with its own
        summed and averaged with two others'; the delta cosine."""
        sets = [[o, *d] for o, d in zip(own, distractors(own, 2))]
        by_doc = list({a.doc_hash: a for a in own}.values())  # in the order of docs
        # Each question's loss first: the mean over questions is "own" (answer_loss's own mean).
        measures = {"own_by_question": lambda: {ex.id: answer_loss(model, tokenizer, [ex], [a])
                                                for ex, a in zip(examples, own)},
                    "own": lambda: sum(row["own_by_question"].values()) / len(row["own_by_question"]),
                    "wrong": lambda: answer_loss(model, tokenizer, examples, wrong_document(own)),
                    "merged3": lambda: answer_loss(model, tokenizer, examples, [merge_adapters(s) for s in sets]),
                    "merged3_mean": lambda: answer_loss(model, tokenizer, examples,
                                                        [merge_adapters(s, "mean") for s in sets]),
                    "first_own": lambda: first_word(model, tokenizer, examples, own),
                    "first_wrong": lambda: first_word(model, tokenizer, examples, wrong_document(own)),
                    "cosine": lambda: mean_pairwise_cosine(by_doc),
                    "doc_own": lambda: passage_loss(model, tokenizer, docs, by_doc),
                    "doc_wrong": lambda: passage_loss(model, tokenizer, docs, wrong_document(by_doc)),
                    # Paragraphs whose own adapter beats the other's (same draw): a gap in the means
                    # could come from a few paragraphs; 20 coin flips give 10 +- 2.2.
                    "doc_wins": lambda: sum(
                        passage_loss(model, tokenizer, [d], [a]) < passage_loss(model, tokenizer, [d], [w])
                        for d, a, w in zip(docs, by_doc, wrong_document(by_doc)))}
        for name, measure in measures.items():
            if name not in row:
                row[name] = measure()

    if args.exact_store and not complete(rows.get("exact", {})):
        store, key = AdapterStore(args.exact_store), ExactEncoder(model, tokenizer).key
        own = [store.get(h, key, model_id(model)) for h in doc_hashes]
        if any(a is None for a in own):
            sys.exit(f"{args.exact_store}: {sum(a is None for a in own)} questions lack an exact adapter ({key})")
        point(rows.setdefault("exact", {"step": "exact"}), own)
    for step, path in tqdm(points, desc="snapshots"):
        key = f"{path.name}@{step}"
        cached_row(rows, key, step, weights_digest(path))
        if not complete(rows[key]):
            by_hash = {a.doc_hash: a for a in HyperEncoder.from_pretrained(path, model, tokenizer).encode(docs)}
            point(rows.setdefault(key, {"step": step}), [by_hash[h] for h in doc_hashes])
        if args.f1 is not None and (not args.f1 or step in args.f1) and "f1" not in rows[key]:
            ds = bench(path, out / key)["datasets"]["squad"]
            rows[key]["f1"] = {"closed": ds["modes"]["closed"]["f1"], "hyper": ds["modes"]["hyper"]["f1"],
                               "wrong": ds["wrong_document"]["hyper"]["f1"]}
        cache.write_text(json.dumps(rows, indent=1))

    none, doc_none, ceiling = rows["none"], rows["doc_none"], rows["in_context"]
    print(f"answer loss without an adapter: {none:.4f} nats/token ({len(examples)} held-out questions), "
          f"with the passage in the prompt: {ceiling:.4f}; passage loss: {doc_none:.4f} ({len(docs)} paragraphs)")
    print("| step | loss own | loss wrong doc | lift (nats) | share of the in-context gap | share of lift lost | loss own + 2 others "
          "| lift merged (nats) | lift mean-merged | mean pairwise cosine | passage lift, own | passage lift, "
          "wrong doc | paragraphs own < wrong | F1 hyper | F1 wrong doc | F1 closed |")
    print("|---" * 16 + "|")
    order = [k for k in rows if k not in ("none", "doc_none", "in_context", "first_none", "first_in_context", "exact")]
    keys = ["exact"] * ("exact" in rows) + sorted(order, key=lambda k: rows[k]["step"])
    for key in keys:
        r = rows[key]
        lost = specificity(-none, -r["own"], -r["wrong"])["share_of_lift_lost"]
        f1 = r.get("f1")
        f1_cells = f"{f1['hyper']:.3f} | {f1['wrong']:.3f} | {f1['closed']:.3f}" if f1 else "| |"
        wins = f"{r['doc_wins']}/{len(docs)}" if "doc_wins" in r else ""  # a cached row from before the measure
        print(f"| {r['step']} | {r['own']:.4f} | {r['wrong']:.4f} | {none - r['own']:+.4f} "
              f"| {(none - r['own']) / (none - ceiling):.2f} | {lost:.2f} "
              f"| {r['merged3']:.4f} | {none - r['merged3']:+.4f} | {none - r['merged3_mean']:+.4f} | {r['cosine']:.3f} "
              f"| {doc_none - r['doc_own']:+.4f} | {doc_none - r['doc_wrong']:+.4f} | {wins} | {f1_cells} |")
    print_first_word(rows, keys)
    if args.against:
        print_against(rows, keys, args.against)


def print_against(rows: dict, keys: list[str], against: str) -> None:
    """Own-adapter answer loss minus another curve's row, paired question by question (negative:
    this row is better), with a 95% bootstrap interval."""
    path, _, key = against.rpartition(":")
    other = json.loads(Path(path).read_text()).get(key, {}).get("own_by_question") if Path(path).is_file() else None
    if other is None:
        sys.exit(f"--against {against}: no row {key!r} with per-question losses in {path} (run this script on it first)")
    print(f"\nOwn-adapter answer loss minus {against} ({sum(other.values()) / len(other):.4f}), paired by question:")
    print("| step | loss own | difference [95% CI] |\n|---|---|---|")
    for k in keys:
        mine = rows[k]["own_by_question"]
        if set(mine) != set(other):
            sys.exit(f"--against {against}: the curves score different questions")
        mean, lo, hi = paired_bootstrap([mine[i] for i in sorted(mine)], [other[i] for i in sorted(mine)])
        print(f"| {rows[k]['step']} | {rows[k]['own']:.4f} | {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] |")


def print_first_word(rows: dict, keys: list[str]) -> None:
    """The first answer word's loss and greedy hit rate: what greedy F1 hangs on, which the mean
    answer loss (every token, the closing newline too) can hide."""
    (l0, h0), (l1, h1) = rows["first_none"], rows["first_in_context"]
    print(f"\nFirst answer word (first non-whitespace token): no adapter {l0:.3f} nats, greedy right {h0:.2f}; "
          f"passage in the prompt {l1:.3f}, {h1:.2f}")
    print("| step | loss own | loss wrong doc | share of the in-context gap (loss) | right own | right wrong doc "
          "| share of the in-context gap (right) |")
    print("|---" * 7 + "|")
    for key in keys:
        (lo, ho), (lw, hw) = rows[key]["first_own"], rows[key]["first_wrong"]
        print(f"| {rows[key]['step']} | {lo:.3f} | {lw:.3f} | {(l0 - lo) / (l0 - l1):.2f} | {ho:.2f} | {hw:.2f} "
              f"| {(ho - h0) / (h1 - h0):.2f} |")


if __name__ == "__main__":
    main()
