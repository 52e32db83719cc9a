"""Top-k passage retrieval: BM25 (bm25s) by default, dense with the sentence embedder as an option.

An index is built either over one question's own candidate passages (the HotpotQA distractor
setting) or once over a whole corpus (``--corpus``) and reused for every question.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import bm25s
import numpy as np

from .adapter import content_hash
from .data import Passage, QAExample


class PassageIndex(Protocol):
    def search(self, query: str, k: int) -> list[Passage]: ...


def distinct(passages: Sequence[Passage]) -> list[Passage]:
    """The first of each text: a text listed twice (HotpotQA has a few under two titles) would be
    prompted twice and, as its adapter is keyed on the text, merged twice."""
    first: dict[str, Passage] = {}
    for p in passages:
        first.setdefault(content_hash(p.text), p)
    return list(first.values())


class BM25Index:
    def __init__(self, passages: Sequence[Passage]):
        if not passages:
            raise ValueError("cannot index an empty passage list")
        self.passages = distinct(passages)
        self._bm25 = bm25s.BM25()
        self._bm25.index(self._tokenize([f"{p.title} {p.text}" for p in self.passages]), show_progress=False)

    @staticmethod
    def _tokenize(texts: list[str]):
        return bm25s.tokenize(texts, stopwords="en", show_progress=False)

    def search(self, query: str, k: int) -> list[Passage]:
        k = min(k, len(self.passages))
        docs, _scores = self._bm25.retrieve(self._tokenize([query]), k=k, show_progress=False)
        return [self.passages[int(i)] for i in docs[0]]


class DenseIndex:
    """Cosine similarity on sentence-transformer embeddings (normalised, so a dot product)."""

    def __init__(self, passages: Sequence[Passage], embedder, progress: bool = True):
        if not passages:
            raise ValueError("cannot index an empty passage list")
        self.passages = distinct(passages)
        self._embedder = embedder
        self._vectors = embedder.encode([f"{p.title}: {p.text}" for p in self.passages],
                                        normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=progress and len(self.passages) > 256)

    def search(self, query: str, k: int) -> list[Passage]:
        q = self._embedder.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
        order = np.argsort(-(self._vectors @ q))[: min(k, len(self.passages))]
        return [self.passages[int(i)] for i in order]


def build_index(passages: Sequence[Passage], method: str = "bm25", embedder=None,
                progress: bool = True) -> PassageIndex:
    """``progress``: a bar while a large corpus is embedded (dense only)."""
    if method == "bm25":
        return BM25Index(passages)
    if method == "dense":
        if embedder is None:
            raise ValueError("dense retrieval needs an embedder")
        return DenseIndex(passages, embedder, progress)
    raise ValueError(f"unknown retrieval method {method!r}; choose 'bm25' or 'dense'")


def retrieve(example: QAExample, k: int = 3, corpus_index: PassageIndex | None = None,
             method: str = "bm25", embedder=None) -> list[Passage]:
    """The top-k passages for one question: from the corpus index when given, else its own candidates."""
    if corpus_index is not None:
        return corpus_index.search(example.question, k)
    if not example.passages:
        raise ValueError(f"question {example.id} has no candidate passages; pass a corpus")
    candidates = distinct(example.passages)
    if len(candidates) == 1:
        return candidates
    # ranked even when k covers every candidate: the prompt lists passages best first
    return build_index(candidates, method, embedder).search(example.question, k)
