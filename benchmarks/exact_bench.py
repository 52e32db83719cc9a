"""Exact-path (PRAG) benchmark: quality of closed/rag/prag/prag-combine on the same questions and
passages, encoder cost, query latency, per-row-adapter batch throughput and adapter size.

Resumable: adapters live in the store and augmentations in the cache, so a rerun redoes nothing.
Usage: .venv/bin/python benchmarks/exact_bench.py [--squad 100] [--hotpot 30] [--out out/exact]
       [--parts timing squad cost hotpotqa]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hyperprag.augment import Augmenter
from hyperprag.data import load_questions, spread_questions
from hyperprag.evaluate import evaluate, merged_adapters, retrieve_all
from hyperprag.exact import ExactEncoder, LoraTrainConfig, training_sequences
from hyperprag.generation import generate_completions
from hyperprag.inject import inject
from hyperprag.models import load_base_model
from hyperprag.prompts import build_prompt
from hyperprag.store import AdapterStore


MODES = ("closed", "rag", "prag", "prag-combine")
PARTS = ("timing", "squad", "cost", "hotpotqa")


def quality(model, tok, encoder, store, name, examples, top_k, batch_size):
    retrieved = retrieve_all(examples, top_k)
    t0 = time.perf_counter()
    adapters = merged_adapters(retrieved, store, encoder)
    encode_s = time.perf_counter() - t0
    out = {"encode_seconds": encode_s, "passages": len({p.text for ps in retrieved for p in ps})}
    for mode in MODES:
        r = evaluate(model, tok, examples, mode, retrieved, batch_size=batch_size,
                     adapters=adapters if mode.startswith("prag") else None)
        out[mode] = {k: r[k] for k in ("em", "f1", "seconds_per_question", "n")}
        out[mode]["predictions"] = r["predictions"]
        print(f"{name:<8} {mode:<13} EM={r['em']:.3f} F1={r['f1']:.3f} s/q={r['seconds_per_question']:.2f}")
    return out, retrieved, adapters


def latency(model, tok, examples, retrieved, adapters, repeats=3):
    """Median seconds per single query (batch 1), rag against prag, interleaved in one process."""
    times = {"rag": [], "prag": []}
    for _ in range(repeats):
        for ex, ps, ad in zip(examples, retrieved, adapters):
            for mode in ("rag", "prag"):
                prompt = build_prompt(ex.question, ps if mode == "rag" else ())
                t0 = time.perf_counter()
                with inject(model, ad if mode == "prag" else None):
                    generate_completions(model, tok, [prompt], max_new_tokens=8)
                times[mode].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def throughput(model, tok, examples, adapters, n=16, repeats=3):
    """16 queries in one batch, each with its own merged top-3 adapter, against the same batch plain."""
    prompts = [build_prompt(ex.question) for ex in examples[:n]]
    rows = adapters[:n]
    res = {"plain": [], "per_row_adapters": []}
    for _ in range(repeats):
        for key, ads in (("plain", None), ("per_row_adapters", rows)):
            t0 = time.perf_counter()
            with inject(model, ads):
                generate_completions(model, tok, prompts, max_new_tokens=8, stop="\x00")
            res[key].append(n / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in res.items()}


def encoder_cost(model, tok, encoder, docs, pad_to=3000):
    """Seconds per document: augmentation (from a cold cache) and training, dynamic padding against
    every sequence padded to ``pad_to`` tokens, trained side by side on the same sequences."""
    padded = ExactEncoder(model, tok, LoraTrainConfig(pad_to=pad_to), augmenter=encoder.augmenter)
    rows = []
    for doc in docs:
        t0 = time.perf_counter()
        [aug] = encoder.augmenter.augment([doc], progress=False)
        aug_s = time.perf_counter() - t0
        seqs = training_sequences(doc, aug)
        t0 = time.perf_counter()
        encoder.train(seqs)
        dyn_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        padded.train(seqs)
        pad_s = time.perf_counter() - t0
        rows.append({"augment": aug_s, "train_dynamic": dyn_s, f"train_pad{pad_to}": pad_s})
        print(f"doc: augment {aug_s:.1f}s train {dyn_s:.1f}s (padded to {pad_to}: {pad_s:.1f}s)")
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def synthetic_merged(model, n: int, k: int, seed: int = 0):
    """Merged top-k adapters with random factors at the real shapes: latency and throughput do not
    depend on the values, so they are measured without waiting for trained adapters."""
    from hyperprag.adapter import DocAdapter
    from hyperprag.merge import merge_adapters
    from hyperprag.models import find_ffn_targets, model_id

    gen = torch.Generator().manual_seed(seed)
    targets = find_ffn_targets(model)

    def one(i):
        f = {t.name: (torch.randn(2, t.in_features, generator=gen) * 0.01,
                      torch.randn(t.out_features, 2, generator=gen) * 0.01) for t in targets}
        return DocAdapter(f, 16.0, model_id(model), "synthetic", "1", f"{seed}-{i}")

    return [merge_adapters([one(i * k + j) for j in range(k)]) for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--squad", type=int, default=100)
    ap.add_argument("--squad-per-doc", type=int, default=5)
    ap.add_argument("--hotpot", type=int, default=30)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--store", default="out/exact-store")
    ap.add_argument("--cost-docs", type=int, default=2)
    ap.add_argument("--out", default="out/exact")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                    help="what to (re)measure; the other figures already in OUT/result.json are kept")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_base_model()
    encoder = ExactEncoder(model, tok)
    store = AdapterStore(args.store)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.setdefault("runs", []).append(vars(args))  # the configuration of every run that added figures

    def save():
        path.write_text(json.dumps(result, indent=1))

    hotpot = load_questions(f"{args.data}/hotpotqa.jsonl")[: args.hotpot]
    if "timing" in args.parts:
        h_ret = retrieve_all(hotpot, args.top_k)
        synth = synthetic_merged(model, 16, args.top_k)
        lat = latency(model, tok, hotpot[:8], h_ret[:8], synth[:8])
        result["latency_s"] = lat | {"prag_over_rag": lat["prag"] / lat["rag"]}
        thr = throughput(model, tok, hotpot, synth)
        result["throughput_q_per_s"] = thr | {"ratio": thr["per_row_adapters"] / thr["plain"]}
        print(json.dumps({"latency_s": result["latency_s"], "throughput_q_per_s": result["throughput_q_per_s"]}))
        save()
    if "squad" in args.parts:
        squad = spread_questions(load_questions(f"{args.data}/squad.jsonl"), args.squad, args.squad_per_doc)
        result["squad"], _, _ = quality(model, tok, encoder, store, "squad", squad, args.top_k, args.batch_size)
        result["bytes_per_doc"] = statistics.median(r.bytes for r in store.records() if r.encoder == encoder.key)
        save()
    if "cost" in args.parts:
        fresh = [ex.passages[0] for ex in load_questions(f"{args.data}/squad.jsonl")[5000:5000 + 40 * args.cost_docs:40]]
        cold = ExactEncoder(model, tok, augmenter=Augmenter(model, tok, cache=out_dir / "cold-augment-cache"))
        result["seconds_per_doc"] = encoder_cost(model, tok, cold, fresh)
        save()
    if "hotpotqa" in args.parts:
        result["hotpotqa"], _, _ = quality(model, tok, encoder, store, "hotpotqa", hotpot, args.top_k, args.batch_size)
        save()
    print(json.dumps({k: v for k, v in result.items() if k not in ("squad", "hotpotqa")}, indent=1))


if __name__ == "__main__":
    main()
