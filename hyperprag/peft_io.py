"""Interoperability with PEFT: export any adapter (or merge) as a PEFT LoRA directory, import one back.

An exported directory loads with stock ``peft.PeftModel.from_pretrained`` on the base model and
computes the same function as hook injection. Merged adapters already carry their scaling inside B,
so they export with ``lora_alpha == r`` (PEFT scaling 1).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from .adapter import DocAdapter
from .errors import HyperpragError
from .models import find_ffn_targets, model_id

_PREFIX = "base_model.model."


def export_peft(adapter: DocAdapter, out_dir: str | Path, base_model_path: str | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank = adapter.rank
    tensors = {}
    for name, (a, b) in adapter.factors.items():
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = a.contiguous().float()
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = b.contiguous().float()
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": adapter.scaling * rank,
        "lora_dropout": 0.0, "bias": "none", "target_modules": sorted(adapter.factors),
        "fan_in_fan_out": False, "use_rslora": False, "inference_mode": True,
        "base_model_name_or_path": base_model_path or adapter.base_model,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt", "hyperprag_doc_hash": adapter.doc_hash})
    return out


def import_peft(peft_dir: str | Path, model: PreTrainedModel) -> DocAdapter:
    """A PEFT LoRA directory on FFN modules of ``model`` as a DocAdapter (encoder ``peft``)."""
    root = Path(peft_dir)
    try:
        config = json.loads((root / "adapter_config.json").read_text())
    except FileNotFoundError:
        raise HyperpragError(f"{root} is not a PEFT adapter directory (no adapter_config.json)") from None
    if config.get("peft_type") != "LORA":
        raise HyperpragError(f"{root}: only LoRA adapters can be imported, not {config.get('peft_type')}")
    if config.get("use_dora"):
        raise HyperpragError(f"{root}: a DoRA adapter is not a sum of low-rank deltas; only plain LoRA can be imported")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):  # per-module ranks or alphas would need a scaling per module
            raise HyperpragError(f"{root}: adapter_config.json sets {key}; only one rank and alpha for all "
                                 "modules can be imported")
    if "r" not in config or "lora_alpha" not in config:
        raise HyperpragError(f"{root}/adapter_config.json lacks 'r' or 'lora_alpha'")
    rank, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
    weights = root / "adapter_model.safetensors"
    if not weights.exists():
        raise HyperpragError(f"{root}: no adapter_model.safetensors (pickled .bin adapters are not loaded)")
    tensors = load_file(str(weights))
    targets = {t.name for t in find_ffn_targets(model)}
    others = [k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))]
    if others:  # a LoRA bias, a trained base bias or a fully trained module: not a sum of B @ A deltas
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        raise HyperpragError(f"{root}: '{others[0]}'{more} is not a LoRA factor but a bias or a module to save; "
                             "only plain LoRA can be imported")
    factors = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")].removeprefix(_PREFIX)
        if name not in targets:
            raise HyperpragError(f"{root}: module '{name}' is not an FFN projection of '{model_id(model)}'")
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise HyperpragError(f"{root}: module '{name}' has lora_A but no lora_B weights")
        factors[name] = (a.float(), b.float())
    if not factors:
        raise HyperpragError(f"{root}: no LoRA weights found")
    # The hash names the delta for merges and resumed runs: the tensors and the scaling read from
    # adapter_config.json (the same weights at another lora_alpha are another adapter), not the
    # file's bytes, whose metadata order safetensors does not keep from one save to the next.
    digest = hashlib.sha256(repr(scaling).encode())
    for name in sorted(factors):
        for t in factors[name]:
            digest.update(name.encode())
            digest.update(t.contiguous().numpy().tobytes())
    return DocAdapter(factors, scaling, model_id(model), "peft", "1", digest.hexdigest(),
                      {"source": str(root)})
