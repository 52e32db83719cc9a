"""The document adapter: low-rank FFN factors for one document (or a merge of several), with the
metadata that makes it safe to store, share and load.

A ``DocAdapter`` is what every encoder produces and what the store, merge, injection and PEFT export
consume, so the exact and the generated paths share everything downstream of ``encode``.
Tensors are a plain state dict (``{module}.lora_A`` r x in, ``{module}.lora_B`` out x r), saved as
safetensors with the metadata in the file header.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from .errors import HyperpragError

FORMAT_VERSION = "1"


def content_hash(text: str) -> str:
    """The identity of a document: sha256 of its whitespace-normalised text."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def _canonical_header(data: bytes) -> bytes:
    """safetensors writes its header's metadata in a random order, so one adapter saved twice gave
    two byte strings (and two sha256s for the store to disagree on). The header is rewritten with
    sorted keys, padded with spaces to 8 bytes as the format asks; the tensor offsets are relative
    to the data after it, so they stand."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


class AdapterMismatchError(HyperpragError):
    """An adapter built for another base model or module shapes than the one it is used with."""


@dataclass
class DocAdapter:
    """Per target module ``name -> (A, B)``; the delta of a module is ``scaling * B @ A``."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scaling: float
    base_model: str
    encoder: str
    encoder_version: str
    doc_hash: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return next(iter(self.factors.values()))[0].shape[0]

    def delta(self, name: str) -> torch.Tensor:
        """The full weight delta of one module (out x in); for tests and diagnostics, not for inference."""
        a, b = self.factors[name]
        return self.scaling * (b.float() @ a.float())

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> DocAdapter:
        factors = {n: (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
                   for n, (a, b) in self.factors.items()}
        return DocAdapter(factors, self.scaling, self.base_model, self.encoder, self.encoder_version,
                          self.doc_hash, dict(self.extra))

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT_VERSION, "base_model": self.base_model, "encoder": self.encoder,
                "encoder_version": self.encoder_version, "doc_hash": self.doc_hash,
                "rank": str(self.rank), "scaling": repr(self.scaling), "extra": json.dumps(self.extra)}

    def to_bytes(self) -> bytes:
        tensors = {}
        for name, (a, b) in self.factors.items():
            tensors[f"{name}.lora_A"] = a.detach().contiguous().cpu()
            tensors[f"{name}.lora_B"] = b.detach().contiguous().cpu()
        return _canonical_header(save_bytes(tensors, metadata=self.metadata()))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> DocAdapter:
        try:
            tensors = load_bytes(data)
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8:8 + header_len])["__metadata__"]
        except Exception as err:  # safetensors raises several types for a damaged file
            raise HyperpragError(f"{source}: not a readable adapter file ({err})") from None
        names = sorted({k.rsplit(".", 1)[0] for k in tensors})
        factors = {n: (tensors[f"{n}.lora_A"], tensors[f"{n}.lora_B"]) for n in names}
        return cls(factors, float(meta["scaling"]), meta["base_model"], meta["encoder"],
                   meta["encoder_version"], meta["doc_hash"], json.loads(meta.get("extra", "{}")))

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> DocAdapter:
        return cls.from_bytes(Path(path).read_bytes(), str(path))

    def check_compatible(self, model_name: str, shapes: dict[str, tuple[int, int]]) -> None:
        """Refuse, with both names, an adapter made for another base model or module shapes."""
        if self.base_model != model_name:
            raise AdapterMismatchError(
                f"adapter {self.doc_hash[:12]} was made for base model '{self.base_model}', "
                f"not '{model_name}'")
        for name, (a, b) in self.factors.items():
            if name not in shapes:
                raise AdapterMismatchError(f"adapter module '{name}' does not exist in '{model_name}'")
            fan_in, fan_out = shapes[name]
            if a.shape[1] != fan_in or b.shape[0] != fan_out:
                raise AdapterMismatchError(
                    f"adapter module '{name}' is {b.shape[0]}x{a.shape[1]}, but in '{model_name}' it is "
                    f"{fan_out}x{fan_in}")
