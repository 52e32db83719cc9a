"""The generated encoder: documents -> embeddings -> hypernetwork -> DocAdapters, one forward pass.

Checkpoints are a directory with ``config.json`` and ``model.safetensors`` (no pickle). The config
pins the base model, the embedding source and every target shape, and loading refuses a mismatch
with both names.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapter import AdapterMismatchError, DocAdapter, content_hash
from .data import Passage
from .embeddings import EmbeddingSource, build_source
from .encoder import DocumentEncoder
from .errors import HyperpragError
from .files import write_text_atomic
from .hypernet import HyperNetConfig, HyperNetwork, weights_stamp
from .models import FFNTarget, find_ffn_targets, model_id

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "gemma-3-270m-token-seq-r128-tied-aug"
RETIRED = "checkpoints retired from checkpoints/ are restored from the git history, as checkpoints/README.md says"


def provenance_file(checkpoint: Path, name: str) -> Path | None:
    """A file the training run wrote about a checkpoint (``training_config.yaml``,
    ``heldout_hashes.json``): inside it, or, for runs before session 25, in the run directory above."""
    return next((d / name for d in (checkpoint, checkpoint.parent) if (d / name).exists()), None)


CONFIG_KEYS = ("base_model", "embedding_source", "hypernet", "targets")


def _read_config(root: Path) -> dict:
    """A checkpoint's config.json, refused in one line when it is not a hypernetwork's (for example a
    base model directory passed as --checkpoint)."""
    try:
        config = json.loads((root / "config.json").read_text())
    except FileNotFoundError:
        raise HyperpragError(f"{root} is not a hypernetwork checkpoint (no config.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HyperpragError(f"{root}/config.json is not valid JSON ({err})") from None
    missing = [k for k in CONFIG_KEYS if k not in config] if isinstance(config, dict) else list(CONFIG_KEYS)
    if missing:
        raise HyperpragError(f"{root} is not a hypernetwork checkpoint (config.json lacks {', '.join(missing)})")
    kinds = {"base_model": str, "embedding_source": str, "hypernet": dict, "targets": list}
    for key, kind in kinds.items():  # a hand-edited file: named here, not as a TypeError further on
        if not isinstance(config[key], kind):
            raise HyperpragError(f"{root}/config.json: '{key}' must be a {kind.__name__}, got {config[key]!r:.60}")
    if not isinstance(config["hypernet"].get("roles"), dict):
        raise HyperpragError(f"{root}/config.json: 'hypernet' has no 'roles' mapping")
    return config


def _first_difference(have: list, want: list) -> tuple[str, str]:
    """The first target where a checkpoint and a model disagree, for the mismatch message."""
    for h, w in zip(have, want):
        if h != w:
            return str(h), str(w)
    return f"{len(have)} modules", f"{len(want)} modules"


class HyperEncoder(DocumentEncoder):
    name = "hyper"
    version = "1"
    # Generated adapters share a large common part (pairwise cosine 0.3-0.8 against the exact
    # adapters' 0.07): summed over the top 3 it is added three times and wrecks the answers
    # (benchmarks/hyper_merge.md, HotpotQA: the shipped v0 F1 0.078 summed, 0.136 averaged).
    # Averaging keeps it once.
    merge = "mean"

    def __init__(self, hypernet: HyperNetwork, source: EmbeddingSource, base_model: str,
                 targets: list[FFNTarget], batch_size: int = 64):
        self.hypernet = hypernet.eval()
        self.source = source
        self.base_model = base_model
        self.targets = targets
        self.chunk_size = batch_size
        self._digest: tuple[tuple, str] | None = None

    @property
    def key(self) -> str:
        """Names the function from text to adapters: the config (alpha sets the scaling without
        touching a weight), the embedding source and the weights. The weights' hash is kept until
        a weight or buffer changes (``weights_stamp``: an optimiser step, a load, ``set_center``, a
        move), so that a store or a result cache is never served adapters of weights that have since
        changed."""
        stamp = weights_stamp(self.hypernet)
        if self._digest is None or self._digest[0] != stamp:
            h = hashlib.sha256(json.dumps(self.hypernet.config.to_dict(), sort_keys=True).encode())
            h.update(self.source.id.encode())
            for name, t in sorted(self.hypernet.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().float().numpy().tobytes())
            self._digest = (stamp, h.hexdigest()[:10])
        return f"{self.name}-v{self.version}-{self._digest[1]}"

    def factors(self, embeddings: torch.Tensor) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Per document, per target module (A, B); differentiable, for training."""
        return self._per_document(self.hypernet(embeddings))

    def _per_document(self, out: dict[str, tuple[torch.Tensor, torch.Tensor]], copy: bool = False):
        """``copy``: each document's factors in contiguous CPU tensors of its own rather than views
        of the batch's (see ``encode``)."""
        def docs(t: torch.Tensor):
            if not copy:
                return t.unbind(0)
            return [x.to("cpu", memory_format=torch.contiguous_format, copy=True) for x in t.unbind(0)]

        # unbind makes every view in one call; indexing per (document, target) cost a Python-level
        # select each, about 0.2 ms a document at 54 targets.
        split = {r: [(a_i.unbind(0), b_i.unbind(0)) for a_i, b_i in zip(docs(a), docs(b))]
                 for r, (a, b) in out.items()}
        n = len(next(iter(split.values())))
        return [{t.name: (split[t.role][i][0][t.layer], split[t.role][i][1][t.layer]) for t in self.targets}
                for i in range(n)]

    @torch.inference_mode()
    def encode(self, docs: Sequence[Passage], progress: bool = False) -> list[DocAdapter]:
        if not docs:
            return []
        for d in docs:
            if not d.text.strip():
                raise HyperpragError(f"document '{d.title or d.id}' is empty")
        emb = self.source.embed([d.text for d in docs])
        # in eval mode whatever the caller left the network in: in training mode a centred network
        # subtracts the batch's own mean, so a document's adapter would depend on its batch-mates
        training = self.hypernet.training
        try:
            out = self.hypernet.eval()(emb.to(next(self.hypernet.parameters()).device))
        finally:
            self.hypernet.train(training)
        # Each document's factors copied out of the batch's tensors: as views, one adapter kept
        # (a cache, a merge) kept the whole batch alive, 32x its own memory at 32 documents.
        per_doc = self._per_document(out, copy=True)
        key = self.key  # once a batch: it checks every weight for a change
        return [DocAdapter(f, self.hypernet.config.scaling, self.base_model, self.name, self.version,
                           content_hash(d.text), {"encoder_key": key, "embedding": self.source.id})
                for d, f in zip(docs, per_doc)]

    def save_pretrained(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        config = {"hyperprag_version": self.version, "base_model": self.base_model,
                  "embedding_source": self.source.id, "hypernet": self.hypernet.config.to_dict(),
                  "targets": [[t.name, t.layer, t.role, t.in_features, t.out_features] for t in self.targets]}
        # config.json is what marks a checkpoint, so it lands last and each file lands whole: a run
        # killed while saving leaves the previous checkpoint, never a config beside half its weights.
        tmp = out / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.hypernet.state_dict().items()}, str(tmp))
        os.replace(tmp, out / "model.safetensors")
        write_text_atomic(out / "config.json", json.dumps(config, indent=2))
        return out

    @classmethod
    def from_pretrained(cls, ckpt_dir: str | Path | None, model: PreTrainedModel,
                        tokenizer: PreTrainedTokenizerBase | None = None,
                        source: EmbeddingSource | None = None) -> HyperEncoder:
        """Load a checkpoint for ``model``; ``None`` is the shipped default checkpoint."""
        root = Path(ckpt_dir) if ckpt_dir is not None else DEFAULT_CHECKPOINT
        if ckpt_dir is None and not root.exists():
            raise HyperpragError(f"the shipped checkpoint is not at {root}: it lives in the repository's "
                                 f"checkpoints/, which only an editable install (pip install -e .) sees; "
                                 f"pass --checkpoint")
        if not root.exists():
            raise HyperpragError(f"{root} does not exist ({RETIRED})")
        config = _read_config(root)
        name = model_id(model)
        if config["base_model"] != name:
            raise AdapterMismatchError(
                f"hypernetwork {root} was trained for base model '{config['base_model']}', not '{name}'")
        targets = find_ffn_targets(model)
        want = [[t.name, t.layer, t.role, t.in_features, t.out_features] for t in targets]
        if config["targets"] != want:
            have, need = _first_difference(config["targets"], want)
            raise AdapterMismatchError(f"hypernetwork {root} targets other FFN modules than '{name}' has: "
                                       f"checkpoint {have}, model {need}")
        source = source or build_source(config["embedding_source"], model, tokenizer)
        if source.id != config["embedding_source"]:
            raise AdapterMismatchError(
                f"hypernetwork {root} was trained on embeddings '{config['embedding_source']}', not '{source.id}'")
        hcfg = config["hypernet"]
        hcfg["roles"] = {r: tuple(s) for r, s in hcfg["roles"].items()}
        try:
            hypernet = HyperNetwork(HyperNetConfig(**hcfg))
        except TypeError as err:  # a key this version does not know: a newer hyperprag wrote it
            raise HyperpragError(f"{root}/config.json: {err}; was it written by a newer hyperprag?") from None
        weights = root / "model.safetensors"
        if not weights.exists():
            raise HyperpragError(f"{root} has a config.json but no model.safetensors")
        try:
            hypernet.load_state_dict(load_file(str(weights)))
        except Exception as err:  # a damaged file (SafetensorError) or weights of another config (RuntimeError)
            why = " ".join(str(err).split()) or type(err).__name__
            why = why if len(why) <= 300 else why[:300] + " ..."
            raise HyperpragError(f"{weights} does not hold the weights its config.json describes: {why}") from None
        # beside the model it writes adapters for, so that on a GPU one forward pass stays on it
        return cls(hypernet.to(next(model.parameters()).device), source, name, targets)

    @classmethod
    def create(cls, model: PreTrainedModel, source: EmbeddingSource, **hyper_kw) -> HyperEncoder:
        """A freshly initialised hypernetwork for ``model`` (to be trained); a per-token source gets
        the attention reader."""
        targets = find_ffn_targets(model)
        reader = "attention" if getattr(source, "per_token", False) else "pooled"
        hypernet = HyperNetwork(HyperNetConfig.from_targets(targets, source.dim, reader=reader, **hyper_kw))
        return cls(hypernet, source, model_id(model), targets)
