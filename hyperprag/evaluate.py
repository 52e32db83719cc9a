"""Answering questions in one mode and scoring the answers: the engine behind ``hyperprag eval``.

A mode decides two things per question: whether the retrieved passages go into the prompt, and
which adapters are injected while generating (the parametric modes).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapter import DocAdapter, content_hash
from .data import Passage, QAExample
from .generation import generate_answers
from .encoder import DocumentEncoder
from .inject import inject
from .merge import merge_adapters
from .metrics import best_em_f1
from .prompts import build_prompt
from .retrieval import PassageIndex, retrieve
from .store import AdapterStore


@dataclass(frozen=True)
class Mode:
    name: str
    passages_in_prompt: bool
    encoder: str | None          # which encoder's adapters are injected; None for in-context modes
    description: str

    @property
    def adapters(self) -> bool:
        return self.encoder is not None

    @property
    def reads_passages(self) -> bool:
        """Whether answering needs retrieved passages, in the prompt or as adapters: closed-book does not."""
        return self.passages_in_prompt or self.adapters


MODES: dict[str, Mode] = {
    "closed": Mode("closed", False, None, "no passages: what the model knows by itself"),
    "rag": Mode("rag", True, None, "top-k retrieved passages in the prompt"),
    "prag": Mode("prag", False, "exact", "trained adapters of the top-k passages, merged; no passages in the prompt"),
    "prag-combine": Mode("prag-combine", True, "exact", "trained adapters and the passages in the prompt"),
    "hyper": Mode("hyper", False, "hyper", "generated adapters of the top-k passages, merged; no passages"),
    "hyper-combine": Mode("hyper-combine", True, "hyper", "generated adapters and the passages in the prompt"),
}


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}; choose from {', '.join(MODES)}")
    return MODES[name]


def retrieve_all(examples: Sequence[QAExample], top_k: int, corpus_index: PassageIndex | None = None,
                 method: str = "bm25", embedder=None) -> list[list[Passage]]:
    """Retrieval is done once for all modes, so every mode answers with the same passages."""
    return [retrieve(ex, top_k, corpus_index, method, embedder) for ex in examples]


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[QAExample], mode: str,
             retrieved: Sequence[Sequence[Passage]], batch_size: int = 8, max_new_tokens: int = 32,
             progress: bool = True, adapters: Sequence[DocAdapter] | None = None) -> dict:
    """Answer every question in ``mode`` and score it. Returns the JSON-ready result.

    ``adapters`` holds, per question, the merged adapter of its retrieved passages (parametric
    modes only); each batch runs with every row's own adapter injected.
    """
    spec = get_mode(mode)
    if spec.adapters and (adapters is None or len(adapters) != len(examples)):
        raise ValueError(f"mode {mode!r} needs one merged adapter per question")
    records = []
    bar = tqdm(total=len(examples), desc=f"eval {mode}", unit="q", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        passages = retrieved[start:start + batch_size]
        prompts = [build_prompt(ex.question, ps if spec.passages_in_prompt else ())
                   for ex, ps in zip(batch, passages)]
        rows = adapters[start:start + batch_size] if spec.adapters else None
        t0 = time.perf_counter()
        with inject(model, rows):
            answers = generate_answers(model, tokenizer, prompts, max_new_tokens)
        per_question = (time.perf_counter() - t0) / len(batch)
        for ex, ps, answer in zip(batch, passages, answers):
            em, f1 = best_em_f1(answer, ex.answers)
            records.append({"id": ex.id, "question": ex.question, "answers": ex.answers,
                            "prediction": answer, "em": em, "f1": f1, "type": ex.type,
                            "passages": [p.title or p.id for p in ps], "seconds": per_question})
        bar.update(len(batch))
    bar.close()
    return {"mode": mode, **summarize(records), "predictions": records}


def summarize(records: Sequence[dict]) -> dict:
    """Mean EM, F1 and seconds over answered questions, overall and per question type (when the
    data has types, e.g. HotpotQA's bridge/comparison)."""
    def means(rs):
        n = len(rs)
        return {"n": n, "em": sum(r["em"] for r in rs) / n if n else 0.0,
                "f1": sum(r["f1"] for r in rs) / n if n else 0.0}

    out = means(records)
    out["seconds_per_question"] = sum(r["seconds"] for r in records) / len(records) if records else 0.0
    types = sorted({r["type"] for r in records if r.get("type")})
    if types:
        out["by_type"] = {t: means([r for r in records if r.get("type") == t]) for t in types}
    return out


def merged_adapters(retrieved: Sequence[Sequence[Passage]], store: AdapterStore, encoder: DocumentEncoder,
                    method: str | None = None, progress: bool = True) -> list[DocAdapter]:
    """Per question, the merge of its passages' adapters (``method``, default the encoder's own);
    each distinct passage is encoded once, reusing whatever the store already holds."""
    unique = list({content_hash(p.text): p for ps in retrieved for p in ps}.values())
    by_hash = {a.doc_hash: a for a in store.get_or_encode(unique, encoder, progress=progress)}
    return [merge_adapters([by_hash[content_hash(p.text)] for p in ps], method or encoder.merge) for ps in retrieved]
