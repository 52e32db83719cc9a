"""What does one kept adapter from a batched ``encode`` hold, and what does owning it cost?

``HyperEncoder.encode`` copies each document's factors out of the batch's tensors (session 35).
As views, one adapter kept (a cache, a merged top-k) kept the whole batch alive. This prints, for
the shipped checkpoint on the first passages of ``--data``, side by side in one run:
- the bytes an adapter's factors own and the bytes of the storages they keep alive;
- the time to split the batch's output into per-document adapters as views and as copies (best of
  ``--repeats``), at each batch size;
- what ``encode`` (copies included) costs a document at batch 1 and 64: ``hyperprag.bench.hyper_cost``,
  the speed bar's own figure (benchmarks/hyper_speed.md).

    .venv/bin/python benchmarks/encode_memory.py --data out/squad_broad.jsonl
"""
from __future__ import annotations

import argparse
import time

import torch

from hyperprag.bench import hyper_cost
from hyperprag.data import Passage, load_questions
from hyperprag.hyper_encoder import HyperEncoder
from hyperprag.models import load_base_model


def held_bytes(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, int]:
    """(bytes the tensors cover, bytes of the distinct storages they keep alive)."""
    tensors = [t for pair in factors.values() for t in pair]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(t.numel() * t.element_size() for t in tensors), sum(storages.values())


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/squad.jsonl")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = load_base_model()
    enc = HyperEncoder.from_pretrained(None, model, tokenizer)
    docs = [Passage(ex.passages[0].title, ex.passages[0].text) for ex in load_questions(args.data)[: max(args.batch)]]
    enc.encode(docs[:1])  # warm: the reader's plan, the key
    print("| documents | one adapter owns (MB) | keeps alive as views (MB) | as copies (MB) | split as views (ms) "
          "| as copies (ms) |\n|---|---|---|---|---|---|")
    for n in args.batch:
        with torch.inference_mode():
            out = enc.hypernet.eval()(enc.source.embed([d.text for d in docs[:n]]))
            own, views = held_bytes(enc._per_document(out)[0])
            _, copies = held_bytes(enc._per_document(out, copy=True)[0])
            t_views = best_of(lambda: enc._per_document(out), args.repeats)
            t_copies = best_of(lambda: enc._per_document(out, copy=True), args.repeats)
        print(f"| {n} | {own / 1e6:.2f} | {views / 1e6:.2f} | {copies / 1e6:.2f} | {t_views * 1e3:.2f} "
              f"| {t_copies * 1e3:.2f} |")
    cost = hyper_cost(enc, docs[:8], repeats=5)
    print(f"\nencode, a document (hyper_cost, median of 5): batch 1 {cost['batch1'] * 1e3:.1f} ms, "
          f"batch 64 {cost['batch64'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
