"""The exact encoder (PRAG): self-augment each document, then train its FFN LoRA.

Defaults are the paper's recipe: 1 rewrite + 3 QA pairs, r=2, alpha=32, dropout 0, lr 3e-4, 1 epoch,
batch 1, FFN modules only, and one shared seeded initial LoRA (A random, B zero) for every document.
The LoRA is trained through the same forward hooks that later inject it, so training and
inference cannot disagree about what an adapter means. Sequences are never padded to a fixed
length (dynamic padding per batch) unless ``pad_to`` asks for it, which exists to measure the cost
of the reference code's fixed 3000-token padding.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from .adapter import DocAdapter, content_hash
from .augment import AugmentConfig, Augmentation, Augmenter
from .data import Passage
from .encoder import DocumentEncoder
from .errors import HyperpragError
from .inject import lora_hooks
from .models import find_ffn_targets, model_id
from .prompts import build_prompt

ENCODER_VERSION = "1"


@dataclass
class LoraTrainConfig:
    rank: int = 2
    alpha: float = 32.0
    dropout: float = 0.0
    lr: float = 3e-4
    epochs: int = 1
    batch_size: int = 1
    init_seed: int = 42       # the one initial LoRA shared by every document
    seed: int = 0             # data order and dropout
    bf16: bool = False        # bf16 autocast for the forward/backward pass
    max_doc_tokens: int = 1024
    pad_to: int | None = None  # pad every sequence to this many tokens (benchmarking the reference recipe)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


# Named training recipes. ``reference`` is PRAG's: one epoch of single sequences at 3e-4, which
# moves a 270M model little. ``converged`` trains on the same augmented data until the passage is
# held: every sequence in one batch at 1e-3. Its 10 steps were chosen on SQuAD validation
# paragraphs, where 40 did no better (prag F1 0.215 against 0.217); benchmarks/exact.md.
RECIPES: dict[str, LoraTrainConfig] = {
    "reference": LoraTrainConfig(),
    "converged": LoraTrainConfig(lr=1e-3, epochs=10, batch_size=64),
}


@dataclass
class TrainSequence:
    text: str
    prompt_chars: int = 0     # loss only on characters after this (0: on the whole text)


def training_sequences(doc: Passage, aug: Augmentation) -> list[TrainSequence]:
    """The document, its rewrites (whole-text LM loss) and its QA pairs in the closed-book prompt
    format that PRAG queries use (loss on the answer only)."""
    seqs = [TrainSequence(doc.text)] + [TrainSequence(r) for r in aug.rewrites]
    for q, a in aug.qa:
        prompt = build_prompt(q)
        seqs.append(TrainSequence(f"{prompt} {a}\n", prompt_chars=len(prompt)))
    return seqs


class ExactEncoder(DocumentEncoder):
    name = "exact"
    version = ENCODER_VERSION

    def __init__(self, model, tokenizer, lora: LoraTrainConfig | None = None,
                 augment: AugmentConfig | None = None, augmenter: Augmenter | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.lora = lora or LoraTrainConfig()
        self.augmenter = augmenter or Augmenter(model, tokenizer, augment)
        self.chunk_size = self.augmenter.config.batch_size
        self.base_model = model_id(model)
        self.targets = find_ffn_targets(model)
        for p in model.parameters():
            p.requires_grad_(False)
        gen = torch.Generator().manual_seed(self.lora.init_seed)
        # PEFT's init: A ~ kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        self.init_factors = {
            t.name: ((torch.rand(self.lora.rank, t.in_features, generator=gen) * 2 - 1) / math.sqrt(t.in_features),
                     torch.zeros(t.out_features, self.lora.rank))
            for t in self.targets}

    @property
    def key(self) -> str:
        settings = json.dumps([asdict(self.lora), asdict(self.augmenter.config)], sort_keys=True)
        return f"{self.name}-v{self.version}-{content_hash(settings)[:10]}"

    def _truncate(self, doc: Passage) -> tuple[Passage, dict[str, str]]:
        if not doc.text.strip():
            raise HyperpragError(f"document '{doc.title or doc.id}' is empty")
        ids = self.tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.lora.max_doc_tokens:
            return doc, {}
        text = self.tokenizer.decode(ids[: self.lora.max_doc_tokens])
        return Passage(doc.title, text, doc.id), {"truncated_from_tokens": str(len(ids))}

    def encode(self, docs: Sequence[Passage], progress: bool = False) -> list[DocAdapter]:
        prepared = [self._truncate(d) for d in docs]
        augs = self.augmenter.augment([d for d, _ in prepared], progress=progress)
        adapters = []
        for original, (doc, extra), aug in zip(docs, prepared, augs):
            factors = self.train(training_sequences(doc, aug))
            if aug.failed:
                extra["augmentation_failed"] = aug.failed
            extra["encoder_key"] = self.key
            # Hashed on the text as given, so the store finds the adapter for that document.
            adapters.append(DocAdapter(factors, self.lora.scaling, self.base_model, self.name, self.version,
                                       content_hash(original.text), extra))
        return adapters

    def _batches(self, seqs: list[TrainSequence]):
        gen = torch.Generator().manual_seed(self.lora.seed)
        order = torch.randperm(len(seqs), generator=gen).tolist()
        bs = self.lora.batch_size
        for start in range(0, len(order), bs):
            yield self._collate([seqs[i] for i in order[start:start + bs]])

    def _collate(self, batch: list[TrainSequence]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        rows, labels = [], []
        for s in batch:
            enc = tok(s.text, return_offsets_mapping=True, truncation=True,
                      max_length=self.lora.max_doc_tokens + 128)
            ids = enc["input_ids"]
            lab = [i if end > s.prompt_chars else -100 for i, (_, end) in zip(ids, enc["offset_mapping"])]
            if tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id:
                lab[0] = -100
            rows.append(ids)
            labels.append(lab)
        length = self.lora.pad_to or max(len(r) for r in rows)
        pad = tok.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        label_t = torch.full((len(rows), length), -100, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            r, lab = r[:length], lab[:length]
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
            label_t[i, : len(lab)] = torch.tensor(lab)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": label_t}

    def train(self, seqs: list[TrainSequence]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Train one LoRA from the shared initial factors on ``seqs``; returns detached (A, B) per module."""
        cfg = self.lora
        device = next(self.model.parameters()).device
        params = {n: (a.clone().to(device).requires_grad_(True), b.clone().to(device).requires_grad_(True))
                  for n, (a, b) in self.init_factors.items()}
        optim = torch.optim.AdamW([t for ab in params.values() for t in ab], lr=cfg.lr, weight_decay=0.0)
        torch.manual_seed(cfg.seed)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
        with torch.enable_grad():
            for _ in range(cfg.epochs):
                for batch in self._batches(seqs):
                    batch = {k: v.to(device) for k, v in batch.items()}
                    with lora_hooks(self.model, params, scaling=cfg.scaling, dropout=cfg.dropout), autocast:
                        loss = self.model(**batch).loss
                    loss.backward()
                    optim.step()
                    optim.zero_grad(set_to_none=True)
        return {n: (a.detach().cpu(), b.detach().cpu()) for n, (a, b) in params.items()}
