"""Injecting low-rank deltas into a stock Hugging Face model with forward hooks.

No modeling file is copied or patched: each target FFN module gets a hook that adds
``(x @ A^T) @ B^T`` to its output. The hooks live inside a context manager, so the model is
exactly the base model again afterwards. Every row of a batch can carry its own adapter: factors
are stacked per row (ranks zero-padded), so many queries with their own documents share one
forward pass.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .adapter import DocAdapter
from .models import find_ffn_targets, model_id


@contextmanager
def lora_hooks(model: nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
               scaling: float = 1.0, dropout: float = 0.0) -> Iterator[None]:
    """Add ``scaling * dropout(x) @ A^T @ B^T`` to each named module's output while inside the block.

    ``A`` is (r, in) and ``B`` (out, r); or, batched per row,
    (batch, r, in) and (batch, out, r). Gradients flow to the factors, which is how the exact
    encoder trains a document's LoRA with the very code that later injects it.
    """
    handles = []

    def make_hook(a: torch.Tensor, b: torch.Tensor):
        def hook(_module, args, output):
            x = args[0]
            if dropout > 0 and torch.is_grad_enabled():
                x = torch.nn.functional.dropout(x, dropout)
            if a.dim() == 2:
                delta = (x @ a.to(x.dtype).T) @ b.to(x.dtype).T
            else:
                rows = a.shape[0]
                # OPT flattens (batch, tokens) into one axis before its FFN; rows stay batch-major.
                flat = x.dim() == 2 and x.shape[0] % rows == 0
                xb = x.reshape(rows, -1, x.shape[-1]) if flat else x
                if xb.shape[0] != rows:
                    raise ValueError(f"batch has {x.shape[0]} rows but {rows} per-row adapters were injected")
                low = torch.einsum("bti,bri->btr", xb, a.to(x.dtype))
                delta = torch.einsum("btr,bor->bto", low, b.to(x.dtype))
                delta = delta.reshape(*x.shape[:-1], delta.shape[-1]) if flat else delta
            return output + scaling * delta
        return hook

    try:
        for name, (a, b) in factors.items():
            module = model.get_submodule(name)
            # Adapters load on the CPU while the model may be on a GPU (a differentiable move).
            device = next(module.parameters()).device
            handles.append(module.register_forward_hook(make_hook(a.to(device), b.to(device))))
        yield
    finally:
        for h in handles:
            h.remove()


def _module_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {t.name: (t.in_features, t.out_features) for t in find_ffn_targets(model)}


def _scaled(adapter: DocAdapter, device, dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: (a.to(device, dtype), (b * adapter.scaling).to(device, dtype))
            for n, (a, b) in adapter.factors.items()}


def _stack_rows(adapters: Sequence[DocAdapter | None], shapes, device, dtype):
    """Per-row factors (batch, R, in) and (batch, out, R); rows with no adapter or a lower rank get zeros."""
    present = [ad for ad in adapters if ad is not None]
    # every module any row adapts (an imported PEFT adapter may cover only some); the others get zeros
    names = list(dict.fromkeys(n for ad in present for n in ad.factors))
    max_rank = max(ad.rank for ad in present)
    stacked = {}
    for name in names:
        fan_in, fan_out = shapes[name]
        a_all = torch.zeros(len(adapters), max_rank, fan_in, device=device, dtype=dtype)
        b_all = torch.zeros(len(adapters), fan_out, max_rank, device=device, dtype=dtype)
        for row, ad in enumerate(adapters):
            if ad is None or name not in ad.factors:
                continue
            a, b = ad.factors[name]
            a_all[row, : a.shape[0]] = a.to(device, dtype)
            b_all[row, :, : b.shape[1]] = (b * ad.scaling).to(device, dtype)
        stacked[name] = (a_all, b_all)
    return stacked


@contextmanager
def inject(model: nn.Module, adapters: DocAdapter | Sequence[DocAdapter | None] | None) -> Iterator[None]:
    """Run ``model`` with one adapter for every row, or a list with one adapter (or None) per row.

    Adapters are checked against the model first: another base model or other shapes raise an
    :class:`~hyperprag.adapter.AdapterMismatchError` naming both.
    """
    if adapters is None or (not isinstance(adapters, DocAdapter) and all(a is None for a in adapters)):
        yield
        return
    shapes = _module_shapes(model)
    name = model_id(model)
    param = next(model.parameters())
    rows = [adapters] if isinstance(adapters, DocAdapter) else list(adapters)
    for ad in rows:
        if ad is not None:
            ad.check_compatible(name, shapes)
    if isinstance(adapters, DocAdapter):
        factors = _scaled(adapters, param.device, param.dtype)
    else:
        factors = _stack_rows(rows, shapes, param.device, param.dtype)
    with lora_hooks(model, factors):
        yield
