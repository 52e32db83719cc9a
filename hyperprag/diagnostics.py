"""Specificity diagnostics: do adapters carry *their* document, or is it one LoRA for all?

Prior generators collapse to nearly the same adapter for every document. Two checks expose it:
the mean pairwise cosine similarity of the full deltas (computed in low-rank form), and a
wrong-document ablation that answers each question with another document's adapter. Its answers
can be scored by greedy F1 (the bench) or, far less noisily, by the teacher-forced answer loss.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapter import DocAdapter
from .data import Passage, QAExample
from .hyper_objectives import AnswerBatch, answer_batch, answer_logits, distill_loss, lm_loss, passage_batch
from .inject import lora_hooks
from .prompts import build_prompt


def delta_inner(x: DocAdapter, y: DocAdapter) -> float:
    """<delta_x, delta_y> summed over every module, via r x r products (never out x in)."""
    total = 0.0
    for name, (ax, bx) in x.factors.items():
        ay, by = y.factors[name]
        total += float(((bx.T.float() @ by.float()) * (ax.float() @ ay.T.float())).sum()) * x.scaling * y.scaling
    return total


def similarity_matrix(adapters: Sequence[DocAdapter]) -> torch.Tensor:
    """Cosine similarity of the concatenated deltas of every pair of adapters."""
    n = len(adapters)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = delta_inner(adapters[i], adapters[j])
    norms = gram.diagonal().clamp_min(1e-30).sqrt()
    return gram / norms[:, None] / norms[None, :]


def mean_pairwise_cosine(adapters: Sequence[DocAdapter]) -> float:
    """Mean off-diagonal cosine: near 1 means the encoder ignores its input."""
    if len(adapters) < 2:
        raise ValueError("need at least two adapters to compare")
    return mean_off_diagonal(similarity_matrix(adapters))


def mean_off_diagonal(sim: torch.Tensor) -> float:
    n = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def sources(adapter: DocAdapter) -> frozenset[str]:
    """The documents an adapter was built from: its own, or those a top-k merge stacked."""
    return frozenset(adapter.extra.get("sources", adapter.doc_hash).split(","))


def wrong_document(adapters: Sequence[DocAdapter], seed: int = 0) -> list[DocAdapter]:
    """Each position gets the adapter of a random *other* retrieval, drawn independently per position
    (with replacement: an adapter may stand in for several positions and another for none). Only
    "none of its own documents" matters for the ablation: a top-k merge that shares a passage with the
    own retrieval (or holds the same ones in another order) would keep part of the lift and make the
    adapters look less specific than they are. Independent draws keep every figure already reported
    reproducible with its seed (where no retrievals overlapped, the draws are the same as before)."""
    own = [sources(a) for a in adapters]
    for i, s in enumerate(own):
        if all(s & t for t in own):
            raise ValueError(f"the wrong-document ablation needs, for every question, an adapter of other "
                             f"documents; question {i}'s documents are in every retrieval")
    rng = random.Random(seed)
    out = []
    for s in own:
        j = rng.randrange(len(adapters))
        while own[j] & s:
            j = rng.randrange(len(adapters))
        out.append(adapters[j])
    return out


def distractors(adapters: Sequence[DocAdapter], n: int, seed: int = 1) -> list[list[DocAdapter]]:
    """For each position, ``n`` adapters of distinct documents other than its own: merged with the
    own adapter they stand in for the other passages of a top-(n+1) retrieval."""
    by_doc = {a.doc_hash: a for a in adapters}
    if len(by_doc) < n + 1:
        raise ValueError(f"{n} distractors need adapters of at least {n + 1} documents, got {len(by_doc)}")
    rng = random.Random(seed)
    return [rng.sample([d for h, d in by_doc.items() if h != a.doc_hash], n) for a in adapters]


def specificity(f1_closed: float, f1_right: float, f1_wrong: float) -> dict[str, float]:
    """Lift over closed-book, and the share of it lost when the adapter is another document's
    (1.0: all of it lost, the adapter is specific; 0.0: it does not matter which document)."""
    lift = f1_right - f1_closed
    lost = (f1_right - f1_wrong) / lift if abs(lift) > 1e-9 else float("nan")
    return {"lift": lift, "wrong_doc_lift": f1_wrong - f1_closed, "share_of_lift_lost": lost}


@torch.inference_mode()
def answer_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[QAExample],
                adapters: Sequence[DocAdapter | None], in_context: bool = False) -> float:
    """Mean over questions of the closed-book prompt's loss (nats per token) on the first gold
    answer, each question with its own adapter (None: none).

    Loss moves long before greedy F1 on 100 questions does, so it shows whether an adapter helps
    (or whether the wrong document's helps as much) when F1 is still noise. ``in_context`` puts
    each question's first passage in the prompt (as rag does): the loss an adapter that held the
    passage as well as the prompt does would reach.
    """
    if len(examples) != len(adapters) or not examples:
        raise ValueError("need one adapter (or None) per question, and at least one question")
    return _mean_loss(model, [_gold_answer(tokenizer, ex, in_context) for ex in examples], adapters)


def _gold_answer(tokenizer: PreTrainedTokenizerBase, ex: QAExample, in_context: bool) -> AnswerBatch:
    """The question's first gold answer after its prompt: closed-book needs no passage, so a
    question without one (a corpus-retrieval dataset) is scored closed-book rather than refused."""
    if in_context and not ex.passages:
        raise ValueError(f"question {ex.id!r} has no passage to put in the prompt")
    return answer_batch(tokenizer, [build_prompt(ex.question, ex.passages[:1] if in_context else ())], [ex.answers[0]])


@torch.inference_mode()
def first_word(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[QAExample],
               adapters: Sequence[DocAdapter | None], in_context: bool = False) -> tuple[float, float]:
    """(loss in nats, share of questions whose greedy choice is right) on the first answer token
    that is not whitespace, teacher-forced as in :func:`answer_loss`.

    The mean answer loss counts every token, the newline that ends an answer and the digits after
    a number's first among them, so it can fall a long way while greedy decoding, which must pick
    the first word, still picks the wrong one. This is the token greedy F1 hangs on.
    """
    if len(examples) != len(adapters) or not examples:
        raise ValueError("need one adapter (or None) per question, and at least one question")
    loss = hits = 0.0
    for ex, ad in zip(examples, adapters):
        batch = _gold_answer(tokenizer, ex, in_context)
        j = int(batch.first.nonzero()[0])
        with lora_hooks(model, ad.factors, scaling=ad.scaling) if ad is not None else nullcontext():
            logits = answer_logits(model, batch)[j]
        loss += float(torch.nn.functional.cross_entropy(logits[None], batch.targets[j:j + 1].to(logits.device)))
        hits += float(int(logits.argmax()) == int(batch.targets[j]))
    return loss / len(examples), hits / len(examples)


@torch.inference_mode()
def passage_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, docs: Sequence[Passage],
                 adapters: Sequence[DocAdapter | None], max_words: int = 64) -> float:
    """Mean over documents of the loss (nats per token) on each one's own first words after its
    title, with its adapter and without it in the prompt: the doc objective, measured. Does an
    adapter hold its passage, and only its own (compare another document's adapter)?"""
    if len(docs) != len(adapters) or not docs:
        raise ValueError("need one adapter (or None) per document, and at least one document")
    return _mean_loss(model, [passage_batch(tokenizer, [d], max_words) for d in docs], adapters)


def _mean_loss(model, batches: Sequence, adapters: Sequence[DocAdapter | None]) -> float:
    total = 0.0
    for batch, ad in zip(batches, adapters):
        with lora_hooks(model, ad.factors, scaling=ad.scaling) if ad is not None else nullcontext():
            total += lm_loss(answer_logits(model, batch), batch).item()
    return total / len(batches)


def fit_adapter(model: PreTrainedModel, student: AnswerBatch, init: dict[str, tuple[torch.Tensor, torch.Tensor]],
                scaling: float, teacher: AnswerBatch | None = None, steps: Sequence[int] = (60,), lr: float = 1e-3
                ) -> dict[int, tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]]:
    """One LoRA optimised by full-batch Adam on one document's answers, from ``init``: at each
    count in ``steps``, its factors and the objective's value at that step. With ``teacher`` (the
    same answers, the passage in the prompt) the objective is the KL from the teacher, as the
    hypernetwork's distillation; without, the gold answers' cross-entropy.

    Not an encoder: given a document's *test* questions it is the best a LoRA of this rank and
    placement can do for them, the ceiling for any encoder, trained or generated; given other
    questions, the per-document optimum that the generator's objective could at best amortise.
    """
    device = next(model.parameters()).device
    target = None
    if teacher is not None:
        with torch.inference_mode():
            target = answer_logits(model, teacher).clone()
    params = {n: (a.clone().to(device).requires_grad_(True), b.clone().to(device).requires_grad_(True))
              for n, (a, b) in init.items()}
    optim = torch.optim.Adam([t for ab in params.values() for t in ab], lr=lr)
    out = {}
    with torch.enable_grad():
        for step in range(1, max(steps) + 1):
            with lora_hooks(model, params, scaling=scaling):
                logits = answer_logits(model, student)
            loss = distill_loss(logits, target) if target is not None else lm_loss(logits, student)
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            if step in steps:
                out[step] = ({n: (a.detach().cpu().clone(), b.detach().cpu().clone()) for n, (a, b) in params.items()},
                             loss.item())
    return out
