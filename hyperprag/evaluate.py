"""Answering questions in one mode and scoring the answers: the engine behind ``hyperprag eval``.

A mode decides two things per question: whether the retrieved passages go into the prompt, and
(for the parametric modes added later) which adapters are injected while generating.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from .data import Passage, QAExample
from .generation import generate_answers
from .metrics import best_em_f1
from .prompts import build_prompt
from .retrieval import PassageIndex, retrieve


@dataclass(frozen=True)
class Mode:
    name: str
    passages_in_prompt: bool
    description: str


MODES: dict[str, Mode] = {
    "closed": Mode("closed", False, "no passages: what the model knows by itself"),
    "rag": Mode("rag", True, "top-k retrieved passages in the prompt"),
}


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}; choose from {', '.join(MODES)}")
    return MODES[name]


def retrieve_all(examples: Sequence[QAExample], top_k: int, corpus_index: PassageIndex | None = None,
                 method: str = "bm25", embedder=None) -> list[list[Passage]]:
    """Retrieval is done once for all modes, so every mode answers with the same passages."""
    return [retrieve(ex, top_k, corpus_index, method, embedder) for ex in examples]


def evaluate(model, tokenizer, examples: Sequence[QAExample], mode: str,
             retrieved: Sequence[Sequence[Passage]], batch_size: int = 8, max_new_tokens: int = 32,
             progress: bool = True) -> dict:
    """Answer every question in ``mode`` and score it. Returns the JSON-ready result."""
    spec = get_mode(mode)
    records = []
    bar = tqdm(total=len(examples), desc=f"eval {mode}", unit="q", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        passages = retrieved[start:start + batch_size]
        prompts = [build_prompt(ex.question, ps if spec.passages_in_prompt else ())
                   for ex, ps in zip(batch, passages)]
        t0 = time.perf_counter()
        answers = generate_answers(model, tokenizer, prompts, max_new_tokens)
        per_question = (time.perf_counter() - t0) / len(batch)
        for ex, ps, answer in zip(batch, passages, answers):
            em, f1 = best_em_f1(answer, ex.answers)
            records.append({"id": ex.id, "question": ex.question, "answers": ex.answers,
                            "prediction": answer, "em": em, "f1": f1, "type": ex.type,
                            "passages": [p.title or p.id for p in ps], "seconds": per_question})
        bar.update(len(batch))
    bar.close()
    n = len(records)
    return {
        "mode": mode,
        "n": n,
        "em": sum(r["em"] for r in records) / n if n else 0.0,
        "f1": sum(r["f1"] for r in records) / n if n else 0.0,
        "seconds_per_question": sum(r["seconds"] for r in records) / n if n else 0.0,
        "predictions": records,
    }
