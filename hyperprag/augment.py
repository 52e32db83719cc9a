"""Self-augmentation: the base model rewrites each document and writes QA pairs about it.

The prompts are few-shot with a fictional example, since a base model follows a pattern rather
than an instruction. Parsing is strict (a question ending in "?", a short answer); a document that
still lacks pairs after a bounded number of sampled retries is recorded as failed, never dropped.
Results are cached by document hash and settings, so reruns cost nothing.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapter import content_hash
from .data import Passage
from .errors import HyperpragError
from .files import write_text_atomic
from .generation import generate_completions
from .metrics import normalize_answer
from .models import cache_dir, model_id

_EXAMPLE_DOC = ("The Velmora Lighthouse was built in 1872 by the engineer Orla Fenwick on the cliffs of "
                "Dunmere. Its lamp could be seen from 30 kilometres away.")
_EXAMPLE_REWRITE = ("On the cliffs of Dunmere stands the Velmora Lighthouse, which the engineer Orla Fenwick "
                    "built in 1872; its lamp was visible 30 kilometres away.")
_EXAMPLE_QA = [("Who built the Velmora Lighthouse?", "Orla Fenwick"),
               ("When was the Velmora Lighthouse built?", "1872"),
               ("How far away could the lamp of the Velmora Lighthouse be seen?", "30 kilometres")]
# An answer is one whole line: an empty "Answer:" must not take the next line's question as its answer.
_QA_LINE = re.compile(r"^\s*(?:Question:)?\s*(?P<q>[^\n]+?\?)\s*\n\s*Answer:[ \t]*(?P<a>[^\n]+)\n", re.M)


def rewrite_prompt(doc: Passage) -> str:
    return ("Rewrite the passage in different words, keeping every fact.\n\n"
            f"Passage: {_EXAMPLE_DOC}\nRewrite: {_EXAMPLE_REWRITE}\n\n"
            f"Passage: {' '.join(doc.text.split())}\nRewrite:")


def qa_prompt(doc: Passage) -> str:
    example = "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in _EXAMPLE_QA)
    return ("Write questions about the passage, each with a short answer taken from the passage.\n\n"
            f"Passage: {_EXAMPLE_DOC}\n{example}\n\n"
            f"Passage: {' '.join(doc.text.split())}\nQuestion:")


def parse_rewrite(completion: str) -> str | None:
    text = completion.strip().split("\n", 1)[0].strip()
    return text if len(text.split()) >= 5 else None


def parse_qa(completion: str, doc_text: str, max_answer_words: int = 12) -> list[tuple[str, str]]:
    """QA pairs from a completion that continues after ``Question:``.

    A small base model often invents answers, so a pair is kept only if its answer occurs in the
    document (after SQuAD normalisation) and is not just repeated from its question. Both are
    matched as whole words: before session 29 the question test matched characters, so "autumn"
    was refused for a question saying "autumnal". Cached augmentations written under that test
    are kept (each of their pairs passes this one too).
    """
    # Generation stops at the first blank line after some text, so a completion may open with one:
    # the pairs are what follows it. A completion with no blank line ran out of tokens, and its
    # last line is cut ("Answer: the merchant Pell"): only the lines a newline ends are read.
    # Caches written before session 33 may hold such a cut answer; they are kept.
    body = completion.lstrip()
    body = body.split("\n\n", 1)[0] + "\n" if "\n\n" in body else body[: body.rfind("\n") + 1]
    text = "Question:" + body
    doc_norm = f" {normalize_answer(doc_text)} "
    pairs, seen = [], set()
    for m in _QA_LINE.finditer(text):
        q, a = m.group("q").strip(), m.group("a").strip().rstrip(".").strip()
        a_norm = normalize_answer(a)
        if (not a_norm or len(a.split()) > max_answer_words or q.lower() in seen
                or f" {a_norm} " not in doc_norm or f" {a_norm} " in f" {normalize_answer(q)} "):
            continue
        seen.add(q.lower())
        pairs.append((q, a))
    return pairs


GENERATION_DTYPES = ("float32", "bfloat16")


@dataclass
class AugmentConfig:
    n_rewrites: int = 1
    n_qa: int = 3
    max_retries: int = 2          # sampled retries after the greedy attempt
    retry_temperature: float = 0.7
    batch_size: int = 8          # generation is bound by reading the weights: rows are nearly free
    seed: int = 0
    # The weights' dtype while generating. bfloat16 halves the bytes read per token, which is what
    # bounds generation here (on this CPU 1.65x faster one document at a time, 2.1x at a batch of
    # 8; benchmarks/exact.md), at the price of somewhat different greedy text; the LoRA still
    # trains on the model as loaded.
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in GENERATION_DTYPES:
            raise HyperpragError(f"augmentation dtype must be one of {', '.join(GENERATION_DTYPES)}, got {self.dtype!r}")

    def settings(self) -> dict:
        """What names a cache and an exact encoder's key. ``dtype`` counts only when it is not the
        float32 every cache and store was written with before it existed, so those stay valid."""
        fields = asdict(self)
        if fields["dtype"] == "float32":
            del fields["dtype"]
        return fields


@dataclass
class Augmentation:
    doc_hash: str
    rewrites: list[str] = field(default_factory=list)
    qa: list[tuple[str, str]] = field(default_factory=list)
    failed: str | None = None     # why it fell short of the requested counts; None when complete


def read_cached(cache: Path, doc_hash: str) -> Augmentation | None:
    """A document's augmentation from a cache directory (as ``hyperprag augment`` prints it), if there."""
    try:
        raw = json.loads((Path(cache) / f"{doc_hash}.json").read_text())
        return Augmentation(raw["doc_hash"], raw["rewrites"], [tuple(p) for p in raw["qa"]], raw["failed"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


class Augmenter:
    """Rewrites and QA pairs for documents, generated by the base model and cached on disk."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: AugmentConfig | None = None,
                 cache: Path | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or AugmentConfig()
        key = content_hash(json.dumps([model_id(model), self.config.settings()], sort_keys=True))[:16]
        self.cache = Path(cache) if cache else cache_dir() / "augment" / key
        self.cache.mkdir(parents=True, exist_ok=True)
        self._generator = None

    @property
    def generator(self) -> PreTrainedModel:
        """The model that writes: the base model itself, or a copy in ``config.dtype``, made at the
        first document not in the cache (a fully cached run never pays for it)."""
        if self._generator is None:
            dtype = getattr(torch, self.config.dtype)
            self._generator = self.model if self.model.dtype == dtype else copy.deepcopy(self.model).to(dtype)
        return self._generator

    def _cached(self, doc_hash: str) -> Augmentation | None:
        return read_cached(self.cache, doc_hash)

    def _store(self, aug: Augmentation) -> None:
        write_text_atomic(self.cache / f"{aug.doc_hash}.json", json.dumps(asdict(aug)))

    def augment(self, docs: Sequence[Passage], progress: bool = True) -> list[Augmentation]:
        hashes = [content_hash(d.text) for d in docs]
        results: dict[str, Augmentation] = {}
        todo = []
        for h, doc in dict(zip(hashes, docs)).items():  # a repeated document is augmented once
            cached = self._cached(h)
            if cached is not None:
                results[h] = cached
            else:
                todo.append((doc, h))
        cfg = self.config
        bar = tqdm(total=len(todo), desc="augment", unit="doc", disable=not progress or not todo)
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start:start + cfg.batch_size]
            for aug in self._augment_batch([d for d, _ in batch], [h for _, h in batch]):
                self._store(aug)
                results[aug.doc_hash] = aug
            bar.update(len(batch))
        bar.close()
        return [results[h] for h in hashes]

    def _generate(self, rows: list[int], prompts: list[str], hashes: list[str], attempt: int, temperature: float,
                  max_new_tokens: int, stop: str) -> list[str]:
        """Completions of ``prompts[i]`` for ``i`` in ``rows``. Greedy attempts run as one batch.
        Sampled retries run a row at a time, each seeded by its document: rows of one batch share
        one random stream, so a document's sample, and the cached adapter trained on it, once
        depended on which documents were batched with it."""
        if temperature == 0.0:
            return generate_completions(self.generator, self.tokenizer, [prompts[i] for i in rows],
                                        max_new_tokens=max_new_tokens, stop=stop)
        return [generate_completions(self.generator, self.tokenizer, [prompts[i]], max_new_tokens=max_new_tokens,
                                     stop=stop, temperature=temperature,
                                     seed=int(content_hash(f"{self.config.seed}:{attempt}:{hashes[i]}")[:8], 16))[0]
                for i in rows]

    def _augment_batch(self, docs: list[Passage], hashes: list[str]) -> list[Augmentation]:
        cfg = self.config
        augs = [Augmentation(h) for h in hashes]
        for attempt in range(cfg.max_retries + 1):
            temperature = 0.0 if attempt == 0 else cfg.retry_temperature
            need_rw = [i for i, a in enumerate(augs) if len(a.rewrites) < cfg.n_rewrites]
            need_qa = [i for i, a in enumerate(augs) if len(a.qa) < cfg.n_qa]
            if not need_rw and not need_qa:
                break
            if need_rw:
                longest = max(len(self.tokenizer(docs[i].text)["input_ids"]) for i in need_rw)
                outs = self._generate(need_rw, [rewrite_prompt(d) for d in docs], hashes, attempt, temperature,
                                      max_new_tokens=min(int(longest * 1.2) + 16, 320), stop="\n")
                for i, out in zip(need_rw, outs):
                    rw = parse_rewrite(out)
                    if rw and rw not in augs[i].rewrites:
                        augs[i].rewrites.append(rw)
            if need_qa:
                outs = self._generate(need_qa, [qa_prompt(d) for d in docs], hashes, attempt, temperature,
                                      max_new_tokens=40 * cfg.n_qa, stop="\n\n")
                for i, out in zip(need_qa, outs):
                    known = {q.lower() for q, _ in augs[i].qa}
                    for q, a in parse_qa(out, docs[i].text):
                        if len(augs[i].qa) < cfg.n_qa and q.lower() not in known:
                            augs[i].qa.append((q, a))
                            known.add(q.lower())
        for a in augs:
            short = []
            if len(a.rewrites) < cfg.n_rewrites:
                short.append(f"{len(a.rewrites)}/{cfg.n_rewrites} rewrites")
            if len(a.qa) < cfg.n_qa:
                short.append(f"{len(a.qa)}/{cfg.n_qa} QA pairs")
            a.failed = f"only {', '.join(short)} after {cfg.max_retries + 1} attempts" if short else None
        return augs
