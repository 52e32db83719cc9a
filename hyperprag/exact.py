"""The exact encoder (PRAG): self-augment each document, then train its FFN LoRA.

Defaults are the paper's recipe: 1 rewrite + 3 QA pairs, r=2, alpha=32, dropout 0, lr 3e-4, 1 epoch,
batch 1, FFN modules only, and one shared seeded initial LoRA (A random, B zero) for every document.
The training *data* is laid out differently from the reference code (PRAG's ``src/encode.py``
trains only QA prompts, the first half of the pairs once with the passage and once with the rewrite
in the prompt and the rest closed-book, with the loss on every token, in file order): here the
passage and its rewrites are plain text with the loss on every token, and each QA pair is a
closed-book prompt with the loss on its answer only, in a seeded shuffle. A base model learns the
passage from the passage itself, and every query it answers is closed-book.
The LoRA is trained through the same forward hooks that later inject it, so training and
inference cannot disagree about what an adapter means. Sequences are never padded to a fixed
length unless ``pad_to`` asks for it, which exists to measure the cost of the reference code's
fixed 3000-token padding; a batch runs as forward passes of similar length instead.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapter import DocAdapter, content_hash
from .augment import AugmentConfig, Augmentation, Augmenter
from .data import Passage
from .encoder import DocumentEncoder
from .errors import HyperpragError
from .inject import lora_hooks
from .models import find_ffn_targets, head_logits, model_id
from .prompts import build_prompt

ENCODER_VERSION = "1"
PAD_SLACK = 1.25  # padded tokens a forward pass may hold, as a multiple of its real ones


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

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lora: LoraTrainConfig | None = None,
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
        settings = json.dumps([asdict(self.lora), self.augmenter.config.settings()], sort_keys=True)
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

    def _tokenize(self, s: TrainSequence) -> tuple[list[int], list[int]]:
        """Token ids and labels: -100 on the prompt of a QA pair and on BOS."""
        tok = self.tokenizer
        enc = tok(s.text, return_offsets_mapping=True, truncation=True, max_length=self.lora.max_doc_tokens + 128)
        ids = enc["input_ids"]
        labels = [i if end > s.prompt_chars else -100 for i, (_, end) in zip(ids, enc["offset_mapping"])]
        if tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id:
            labels[0] = -100
        return ids, labels

    def _batches(self, n: int) -> list[list[int]]:
        """Indices of each optimiser step's sequences, in the seeded order."""
        gen = torch.Generator().manual_seed(self.lora.seed)
        order = torch.randperm(n, generator=gen).tolist()
        bs = self.lora.batch_size
        return [order[start:start + bs] for start in range(0, n, bs)]

    def _passes(self, rows: list[tuple[list[int], list[int]]]) -> list[list[int]]:
        """One optimiser batch (token ids, labels) split into forward passes, longest first.

        A batch holds the passage and its rewrites next to QA pairs a fraction of their length;
        padded together, the QA pairs would cost as much as the passage. So QA pairs (loss on the
        answer only) never share a pass with whole texts, whose every position needs logits, and a
        sequence joins the current pass while padding stays within ``PAD_SLACK`` of the real
        tokens. With ``pad_to`` everything stays in one pass, as the reference code's fixed padding
        does."""
        if self.lora.pad_to:
            return [list(range(len(rows)))]
        lengths = [len(ids) for ids, _ in rows]
        answer_only = [-100 in labels[1:] for _, labels in rows]
        passes: list[list[int]] = []
        for i in sorted(range(len(rows)), key=lambda i: (answer_only[i], -lengths[i])):
            current = passes[-1] if passes else []
            fits = current and answer_only[current[0]] == answer_only[i] and \
                (len(current) + 1) * lengths[current[0]] <= PAD_SLACK * (sum(lengths[j] for j in current) + lengths[i])
            if fits:
                current.append(i)
            else:
                passes.append([i])
        return passes

    def _collate(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        length = self.lora.pad_to or max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        label_t = torch.full((len(rows), length), -100, dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            ids, lab = ids[:length], lab[:length]
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            label_t[i, : len(lab)] = torch.tensor(lab)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": label_t}

    def _summed_loss(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed next-token loss over one pass's targets, with the output layer applied only at
        positions whose next token is a target: a QA pair's prompt needs none. With ``pad_to``
        every position gets logits, as the reference code computes them."""
        labels = inputs.pop("labels")
        wanted = labels[:, 1:] != -100
        if self.lora.pad_to:
            wanted = torch.ones_like(wanted)
        rows, positions = wanted.nonzero(as_tuple=True)
        hidden = self.model.base_model(**inputs).last_hidden_state
        return F.cross_entropy(head_logits(self.model, hidden[rows, positions]), labels[rows, positions + 1],
                               ignore_index=-100, reduction="sum")

    def train(self, seqs: list[TrainSequence]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Train one LoRA from the shared initial factors on ``seqs``; returns detached (A, B) per module.

        The loss of a step is the mean over every target token of its batch, as one padded forward
        pass would give; the passes of a batch each add their summed token losses over that count,
        so the gradient is the same however the batch is split."""
        cfg = self.lora
        device = next(self.model.parameters()).device
        params = {n: (a.clone().to(device).requires_grad_(True), b.clone().to(device).requires_grad_(True))
                  for n, (a, b) in self.init_factors.items()}
        optim = torch.optim.AdamW([t for ab in params.values() for t in ab], lr=cfg.lr, weight_decay=0.0)
        torch.manual_seed(cfg.seed)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
        rows = [self._tokenize(s) for s in seqs]
        steps = []  # per optimiser step: its target count and its passes, the same every epoch
        for batch in self._batches(len(rows)):
            batch_rows = [rows[i] for i in batch]
            passes = [self._collate([batch_rows[j] for j in group]) for group in self._passes(batch_rows)]
            # counted after collation, which cuts sequences longer than ``pad_to``
            targets = sum(int((p["labels"][:, 1:] != -100).sum()) for p in passes)
            steps.append((targets, passes))
        with torch.enable_grad():
            for _ in range(cfg.epochs):
                for targets, passes in steps:
                    for inputs in passes:
                        with lora_hooks(self.model, params, scaling=cfg.scaling, dropout=cfg.dropout), autocast:
                            loss = self._summed_loss({k: v.to(device) for k, v in inputs.items()})
                        (loss / targets).backward()
                    optim.step()
                    optim.zero_grad(set_to_none=True)
        return {n: (a.detach().cpu(), b.detach().cpu()) for n, (a, b) in params.items()}
