"""How many of its r rank-1 pieces does an adapter use?

An r = 2 LoRA's delta B·A is the sum of two rank-1 pieces, one per row of A (what it fires on) and
column of B (what it writes). If the two A rows point the same way, the delta is close to rank 1 and
half the adapter's capacity is unused. Session 34's review found that the attention reader gives
every A row one shared bias, so its rows start as the same vector; this measures where trained
adapters ended up, generated against exact ones on the same passages.

For each adapter and target (layer x gate/up/down), averaged over both:
- the mean |cosine| between its A rows, and between its B columns (1: parallel);
- the share of the delta's energy (squared Frobenius norm) beyond its top singular direction
  (0: rank 1; at most 1 - 1/r).

    .venv/bin/python benchmarks/adapter_rank.py --data out/squad_broad.jsonl --limit 50 \\
        --exact-store paper=out/broad-exact converged=out/broad-exact-conv

Passages are the data file's in order (every passage of each question, once), held-out ones only
when the checkpoint says which it trained on. Exact adapters are read from each store for the
same passages; a passage a store lacks is left out of that store's row.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from hyperprag.adapter import DocAdapter, content_hash
from hyperprag.cli_types import at_least
from hyperprag.data import Passage, load_questions
from hyperprag.hyper_encoder import DEFAULT_CHECKPOINT, HyperEncoder, provenance_file
from hyperprag.hyper_objectives import distance_from_rank1
from hyperprag.models import find_ffn_targets, load_base_model, model_id
from hyperprag.store import AdapterStore


def _mean_abs_offdiag_cos(rows: torch.Tensor) -> float:
    """Mean |cosine| over the distinct pairs of ``rows`` (r, n)."""
    unit = torch.nn.functional.normalize(rows.float(), dim=-1)
    cos = (unit @ unit.T).abs()
    r = cos.shape[0]
    return float((cos.sum() - cos.diagonal().sum()) / (r * (r - 1)))


def beyond_top(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of ||B·A||_F^2 beyond the top singular direction (the delta itself is never formed);
    nan for a zero delta, which has no direction."""
    if not (a.abs().sum() and b.abs().sum()):
        return float("nan")
    return float(distance_from_rank1(a.double(), b.double()).square())


def rank_use(adapters: Sequence[DocAdapter], roles: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per role (``roles``: target name -> role), the mean over adapters and layers of the three
    figures (module docstring)."""
    sums: dict[str, list[float]] = {}
    for adapter in adapters:
        if adapter.rank < 2:
            raise SystemExit(f"adapter of {adapter.doc_hash} has rank {adapter.rank}: nothing to compare")
        for name, (a, b) in adapter.factors.items():
            acc = sums.setdefault(roles[name], [0.0, 0.0, 0.0, 0])
            acc[0] += _mean_abs_offdiag_cos(a)
            acc[1] += _mean_abs_offdiag_cos(b.T)
            acc[2] += beyond_top(a, b)
            acc[3] += 1
    return {role: {"a_cos": s[0] / s[3], "b_cos": s[1] / s[3], "beyond_top": s[2] / s[3]}
            for role, s in sums.items()}


def passages(data: Sequence[str], held: set[str] | None, limit: int) -> list[Passage]:
    out: dict[str, Passage] = {}
    for path in data:
        for ex in load_questions(path):
            for p in ex.passages:
                h = content_hash(p.text)
                if (held is None or h in held) and len(out) < limit:
                    out.setdefault(h, p)
    if not out:
        sys.exit("no passages: check --data (and that the checkpoint held any of them out)")
    return list(out.values())


def stored(store_dir: str, docs: Sequence[Passage], base_model: str) -> list[DocAdapter]:
    store = AdapterStore(store_dir)
    wanted = {content_hash(d.text) for d in docs}
    found = [store.get(r.doc_hash, r.encoder, r.base_model) for r in store.records()
             if r.doc_hash in wanted and r.base_model == base_model]
    if not found:
        sys.exit(f"{store_dir}: no adapter of these passages for {base_model}")
    return [a for a in found if a is not None]


def table(rows: dict[str, tuple[int, dict[str, dict[str, float]]]]) -> str:
    lines = ["| adapters | n | role | mean abs cos, A rows | mean abs cos, B columns | energy beyond the top direction |",
             "|---|---|---|---|---|---|"]
    for label, (n, by_role) in rows.items():
        for role, f in by_role.items():
            lines.append(f"| {label} | {n} | {role} | {f['a_cos']:.3f} | {f['b_cos']:.3f} | {f['beyond_top']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="hypernetwork checkpoint (default: the shipped one)")
    ap.add_argument("--data", nargs="+", default=["../shared/data/squad.jsonl"], help="question files")
    ap.add_argument("--limit", type=at_least(1), default=50, help="passages measured")
    ap.add_argument("--exact-store", nargs="*", default=[], metavar="NAME=DIR", help="exact adapters to compare")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    model, tokenizer = load_base_model()
    roles = {t.name: t.role for t in find_ffn_targets(model)}
    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    encoder = HyperEncoder.from_pretrained(checkpoint, model, tokenizer)
    held_file = provenance_file(checkpoint, "heldout_hashes.json")
    held = set(json.loads(held_file.read_text())) if held_file else None
    docs = passages(args.data, held, args.limit)
    with torch.no_grad():
        generated = encoder.encode(docs)
    rows = {f"generated ({checkpoint.name})": (len(generated), rank_use(generated, roles))}
    for spec in args.exact_store:
        name, eq, path = spec.partition("=")
        if not eq:
            sys.exit(f"--exact-store {spec!r}: expected NAME=DIR")
        exact = stored(path, docs, model_id(model))
        rows[f"exact, {name}"] = (len(exact), rank_use(exact, roles))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({k: {"n": n, "roles": f} for k, (n, f) in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
