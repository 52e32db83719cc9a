"""Merging the adapters of the top-k documents into one, in low-rank form.

Stacking the factors (A on rows, B on columns, each B pre-scaled) gives an adapter of rank k*r
whose delta is exactly the sum of the k deltas, without ever materialising a full weight matrix.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .adapter import AdapterMismatchError, DocAdapter, content_hash

# Weight on each document's delta. "concat" is PEFT's name ("cat") for the same stacking as "sum";
# it is accepted so PEFT vocabulary works, and yields the identical function.
MERGE_METHODS = ("sum", "mean", "concat")


def merge_adapters(adapters: Sequence[DocAdapter], method: str = "sum") -> DocAdapter:
    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose from {', '.join(MERGE_METHODS)}")
    if not adapters:
        raise ValueError("nothing to merge: no adapters given")
    if len(adapters) == 1 and method != "mean":
        return adapters[0]
    first = adapters[0]
    for ad in adapters[1:]:
        if ad.base_model != first.base_model or ad.factors.keys() != first.factors.keys():
            raise AdapterMismatchError(
                f"cannot merge adapters of '{first.base_model}' and '{ad.base_model}' (or other modules)")
    weight = 1.0 / len(adapters) if method == "mean" else 1.0
    factors = {}
    for name in first.factors:
        factors[name] = (torch.cat([ad.factors[name][0] for ad in adapters], dim=0),
                         torch.cat([ad.factors[name][1] * (ad.scaling * weight) for ad in adapters], dim=1))
    sources = [ad.doc_hash for ad in adapters]
    # the hash names the delta, so it names the weighting too ("concat" is "sum"): a resumed run keyed
    # on merged hashes must not take a mean's answers for a sum's
    weighting = "mean" if method == "mean" else "sum"
    return DocAdapter(factors, 1.0, first.base_model, f"merge-{method}",
                      first.encoder_version, content_hash(" ".join([weighting, *sources])),
                      {"sources": ",".join(sources), "method": method})
