"""Generated against trained adapters on held-aside SQuAD paragraphs (never trained on): the same
100 questions over 20 paragraphs as benchmarks/exact_bench.py, reusing its store of exact adapters.

Runs closed, prag, hyper, hyper-combine and the wrong-document ablations of prag and hyper on
the same questions, the adapter similarity of both encoders, and the hypernetwork's cost.
Usage: .venv/bin/python benchmarks/hyper_bench.py --checkpoint runs/squad_minilm/final
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from hyperprag.adapter import content_hash
from hyperprag.data import load_questions, spread_questions
from hyperprag.diagnostics import mean_pairwise_cosine, specificity, wrong_document
from hyperprag.evaluate import evaluate, merged_adapters
from hyperprag.exact import ExactEncoder
from hyperprag.hyper_encoder import HyperEncoder
from hyperprag.models import load_base_model
from hyperprag.store import AdapterStore



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--heldout", default=None, help="heldout_hashes.json (default: beside the checkpoint)")
    ap.add_argument("--data", default="../shared/data/squad.jsonl")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--questions-per-doc", type=int, default=5)
    ap.add_argument("--store", default="out/exact-store")
    ap.add_argument("--out", default="out/hyper")
    ap.add_argument("--skip-exact", action="store_true")
    args = ap.parse_args()
    heldout = set(json.loads(Path(args.heldout or Path(args.checkpoint).parent / "heldout_hashes.json").read_text()))
    examples = spread_questions(load_questions(args.data), args.questions, args.questions_per_doc)
    hashes = [content_hash(ex.passages[0].text) for ex in examples]
    if not set(hashes) <= heldout:
        raise SystemExit(f"{len(set(hashes) - heldout)} benchmark paragraphs were trained on; use another checkpoint")
    retrieved = [list(ex.passages) for ex in examples]
    model, tok = load_base_model()
    store = AdapterStore(args.store)
    hyper = HyperEncoder.from_pretrained(args.checkpoint, model, tok)
    encoders = {"hyper": hyper} if args.skip_exact else {"hyper": hyper, "exact": ExactEncoder(model, tok)}
    adapters = {name: merged_adapters(retrieved, store, enc) for name, enc in encoders.items()}
    result = {"config": vars(args), "n_docs": len(set(hashes)), "n_questions": len(examples)}
    # rag and prag-combine on these questions are in benchmarks/exact_bench.py's result; the
    # wrong-document ablation runs for the adapter-only modes, where the adapter is all there is.
    runs = [("closed", None), ("hyper", "hyper"), ("hyper-combine", "hyper")]
    if "exact" in adapters:
        runs += [("prag", "exact")]
    for mode, enc in runs:
        r = evaluate(model, tok, examples, mode, retrieved, adapters=adapters.get(enc), progress=False)
        result[mode] = {"em": r["em"], "f1": r["f1"], "s_per_q": r["seconds_per_question"]}
        if enc and not mode.endswith("combine"):
            w = evaluate(model, tok, examples, mode, retrieved, adapters=wrong_document(adapters[enc]),
                         progress=False)
            result[mode]["wrong_doc_f1"] = w["f1"]
            result[mode]["specificity"] = specificity(result["closed"]["f1"], r["f1"], w["f1"])
        print(mode, json.dumps(result[mode]))
    first = [hashes.index(h) for h in dict.fromkeys(hashes)]
    one_per_doc = {name: [ads[i] for i in first] for name, ads in adapters.items()}
    result["mean_pairwise_cosine"] = {n: mean_pairwise_cosine(a) for n, a in one_per_doc.items()}
    docs = [examples[i].passages[0] for i in first]
    times = {"batch1": [], "batch64": []}
    for _ in range(5):
        t0 = time.perf_counter()
        hyper.encode(docs[:1])
        times["batch1"].append(time.perf_counter() - t0)
        batch = (docs * 4)[:64]
        t0 = time.perf_counter()
        hyper.encode(batch)
        times["batch64"].append((time.perf_counter() - t0) / len(batch))
    result["hyper_seconds_per_doc"] = {k: statistics.median(v) for k, v in times.items()}
    result["hyper_parameters"] = hyper.hypernet.num_parameters()
    result["checkpoint_bytes"] = (Path(args.checkpoint) / "model.safetensors").stat().st_size
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
