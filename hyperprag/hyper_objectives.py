"""Training objectives for the hypernetwork, kept apart from the recipe so they can be tested.

(a) reconstruction of exact adapters, compared as deltas in low-rank form (factors are not unique);
(b) LM loss on a document's QA answers with the generated adapter and no document in the prompt;
(c) distillation: KL on the answer tokens from the base model *with the document in the prompt*
    (the in-context teacher) to the base model *with the generated adapter* and without it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange

if TYPE_CHECKING:
    import random

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .models import FFNTarget

from .data import Passage
from .models import head_logits
from .prompts import build_prompt


def lowrank_sq_norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||B @ A||_F^2 for A (..., r, in) and B (..., out, r) via r x r Gram matrices: never out x in.
    In fp32 whatever the autocast: for the difference of two close deltas (``delta_distance``) the
    Gram terms cancel, and in bf16 the result came out 0 where it was 2e-3."""
    with torch.autocast(a.device.type, enabled=False):
        a, b = a.float(), b.float()
        return ((a @ a.transpose(-1, -2)) * (b.transpose(-1, -2) @ b)).sum((-1, -2))


def delta_distance(a1: torch.Tensor, b1: torch.Tensor, s1: float, a2: torch.Tensor, b2: torch.Tensor,
                   s2: float) -> torch.Tensor:
    """Relative squared distance ||s1 B1A1 - s2 B2A2||^2 / ||s2 B2A2||^2, batched, in low-rank form."""
    a = torch.cat([a1, a2], dim=-2)
    b = torch.cat([b1 * s1, -b2 * s2], dim=-1)
    return lowrank_sq_norm(a, b) / lowrank_sq_norm(a2, b2 * s2).clamp_min(1e-12)


def stacked_factors(generated: dict[str, tuple[torch.Tensor, torch.Tensor]], targets: Sequence[FFNTarget],
                    sets: torch.Tensor,
                    method: str = "sum") -> dict:
    """Per-row LoRA factors whose delta is the exact sum (or mean) of the generated deltas of the
    documents in ``sets`` (rows, k): the top-k merge of ``merge.merge_adapters``, done on the
    hypernetwork's batched output so that training sees what retrieval of k documents will do. A
    set shorter than k is padded with -1, which stands for no document (zero factors, not counted
    in the mean): a question with two retrieved passages and one with three can share a batch."""
    if method not in ("sum", "mean"):
        raise ValueError(f"unknown merge method {method!r}; choose 'sum' or 'mean'")
    # Per row, the mean's 1 / (documents in the set); the sum needs no scaling.
    weight = 1.0 / (sets >= 0).sum(1).clamp_min(1) if method == "mean" else None
    factors = {}
    for t in targets:
        a, b = generated[t.role]
        a = torch.cat([a[:, t.layer], a.new_zeros(1, *a.shape[2:])])  # row -1: the zero adapter
        b = torch.cat([b[:, t.layer], b.new_zeros(1, *b.shape[2:])])
        b = b[sets] if weight is None else b[sets] * weight.to(b.dtype)[:, None, None, None]
        factors[t.name] = (rearrange(a[sets], "n k r i -> n (k r) i"), rearrange(b, "n k o r -> n o (k r)"))
    return factors


@dataclass
class AnswerBatch:
    """Right-padded token ids with the positions whose logits predict the answer tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor        # (n_answer_tokens,) row of each answer token
    positions: torch.Tensor   # (n_answer_tokens,) position whose logits predict it
    targets: torch.Tensor     # (n_answer_tokens,) the answer token ids
    first: torch.Tensor       # (n_answer_tokens,) bool: its answer's first token that is not whitespace


def answer_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """An answer's tokens as it follows a prompt: a leading space, and a newline that ends it."""
    return tokenizer(f" {answer.strip()}\n", add_special_tokens=False)["input_ids"]


def first_word_index(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> int:
    """Index of the first token that is not whitespace. Gemma spells " 308" as " ", "3", "0", "8":
    the token greedy decoding must get right is "3", and every number shares the " " before it."""
    return next((j for j, tok in enumerate(ids) if tokenizer.decode([tok]).strip()), 0)


def answer_batch(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], answers: Sequence[str]) -> AnswerBatch:
    """Prompt and answer are tokenised apart and joined, so the teacher's and the student's answer
    tokens are identical whatever their prompts."""
    seqs, rows, positions, targets, first = [], [], [], [], []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        p_ids = tokenizer(p)["input_ids"]
        if not p_ids:  # an untitled passage under a tokenizer without BOS (GPT-2): condition on BOS/EOS,
            # else the first answer token would be read from position -1, the row's padding
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if start is None:
                raise ValueError("an empty prompt needs a BOS or EOS token to start from; the tokenizer has neither")
            p_ids = [start]
        a_ids = answer_ids(tokenizer, a)
        seqs.append(p_ids + a_ids)
        j0 = first_word_index(tokenizer, a_ids)
        for j, tok in enumerate(a_ids):
            rows.append(i)
            positions.append(len(p_ids) + j - 1)
            targets.append(tok)
            first.append(j == j0)
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return AnswerBatch(ids, mask, torch.tensor(rows), torch.tensor(positions), torch.tensor(targets),
                       torch.tensor(first, dtype=torch.bool))


def answer_logits(model: PreTrainedModel, batch: AnswerBatch) -> torch.Tensor:
    """(n_answer_tokens, vocab) logits at the answer positions.

    The LM head is applied to those positions only: with Gemma's 262k vocabulary, full logits for
    a batch of passages would be gigabytes and dominate the step.
    """
    device = next(model.parameters()).device
    hidden = model.base_model(input_ids=batch.input_ids.to(device),
                              attention_mask=batch.attention_mask.to(device)).last_hidden_state
    return head_logits(model, hidden[batch.rows.to(device), batch.positions.to(device)])


def qa_batches(tokenizer: PreTrainedTokenizerBase, docs: Sequence[Passage], questions: Sequence[str],
               answers: Sequence[str]) -> tuple[AnswerBatch, AnswerBatch]:
    """Student (closed-book prompt) and teacher (document in the prompt) batches for the same answers."""
    if not len(docs) == len(questions) == len(answers):
        raise ValueError(f"need one document and one answer per question: {len(docs)} documents, "
                         f"{len(questions)} questions, {len(answers)} answers")
    student = answer_batch(tokenizer, [build_prompt(q) for q in questions], answers)
    teacher = answer_batch(tokenizer, [build_prompt(q, [d]) for q, d in zip(questions, docs)], answers)
    return student, teacher


def passage_batch(tokenizer: PreTrainedTokenizerBase, docs: Sequence[Passage], max_words: int = 96) -> AnswerBatch:
    """Each document's own text as the target after only its title: the adapter must hold the
    passage, as the exact recipe's rewrites teach it to. It needs no questions, so any corpus trains it."""
    return answer_batch(tokenizer, [f"{d.title}:" if d.title else "" for d in docs],
                        [" ".join(d.text.split()[:max_words]) for d in docs])


def lm_loss(student_logits: torch.Tensor, batch: AnswerBatch, first_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy per answer token, averaged; ``first_weight`` counts each answer's first word
    that many times, since greedy decoding must pick it and the tokens after it come easily."""
    targets = batch.targets.to(student_logits.device)
    if first_weight == 1.0:
        return F.cross_entropy(student_logits, targets)
    weights = 1.0 + (first_weight - 1.0) * batch.first.to(student_logits.device, student_logits.dtype)
    return (F.cross_entropy(student_logits, targets, reduction="none") * weights).sum() / weights.sum()


def answer_losses(student_logits: torch.Tensor, batch: AnswerBatch) -> torch.Tensor:
    """(n_answers,) mean cross-entropy per answer: what a per-question comparison needs, where a
    batch mean would let the easy answers hide the ones a wrong adapter answers as well."""
    ce = F.cross_entropy(student_logits, batch.targets.to(student_logits.device), reduction="none")
    rows = batch.rows.to(ce.device)
    n = int(rows.max()) + 1
    return ce.new_zeros(n).index_add(0, rows, ce) / torch.bincount(rows, minlength=n).to(ce.dtype)


def answer_margin(own_logits: torch.Tensor, wrong_logits: torch.Tensor, batch: AnswerBatch,
                  margin: float) -> torch.Tensor:
    """Specificity as an objective: each answer must cost ``margin`` nats less with its own
    document's adapters than with wrong ones. A hinge, so wrong adapters are not pushed to wreck
    the model; per answer, so answers easy either way cannot carry one that ignores its adapter."""
    return torch.relu(margin + answer_losses(own_logits, batch) - answer_losses(wrong_logits, batch)).mean()


def sibling_first_tokens(tokenizer: PreTrainedTokenizerBase, answers: Sequence[str],
                         siblings: Sequence[Sequence[str]], rng: random.Random) -> torch.Tensor:
    """(n_answers,) the first word's token (``first_word_index``) of one other answer of the same
    document, drawn by ``rng`` among those whose first word differs from the answer's own, or -1
    where none does. Two numbers are thus told apart by their first digits, not both read at the
    space before them. Where one answer starts with a space token and the other does not, their
    first words sit one position apart and the margin reads both at the own answer's."""
    def first(text: str) -> int:
        ids = answer_ids(tokenizer, text)
        return ids[first_word_index(tokenizer, ids)]

    out = []
    for answer, others in zip(answers, siblings):
        own = first(answer)
        candidates = [t for t in {first(o) for o in others} if t != own]
        out.append(rng.choice(sorted(candidates)) if candidates else -1)
    return torch.tensor(out, dtype=torch.long)


def sibling_margin(student_logits: torch.Tensor, batch: AnswerBatch, sibling_first: torch.Tensor,
                   margin: float) -> torch.Tensor:
    """Binding as an objective: at each answer's first word, the right answer must beat another
    answer *of the same document* by ``margin`` nats (a hinge). A generated adapter raises all of
    its passage's names together; the lm loss's softmax spreads its push over the whole
    vocabulary, while this one pushes against exactly the names the adapter itself made likely.
    Rows without a sibling (``-1``) count for nothing; none at all gives zero."""
    starts = batch.first.nonzero().squeeze(1).to(student_logits.device)  # one per answer, in row order
    logp = torch.log_softmax(student_logits[starts].float(), dim=-1)
    sibling_first = sibling_first.to(student_logits.device)
    valid = sibling_first >= 0
    if not valid.any():
        return student_logits.new_zeros(())
    own = logp[valid, batch.targets.to(student_logits.device)[starts][valid]]
    other = logp[valid, sibling_first[valid]]
    return torch.relu(margin - (own - other)).mean()


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per answer token, averaged."""
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    s = F.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def distance_from_rank1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||B A - its best rank-1 approximation||_F / ||B A||_F for A (..., r, in) and B (..., out, r):
    0 for a rank-1 delta, sqrt((r-1)/r) at most; squared, the share of the delta's energy beyond its
    top direction. The singular values come from the r x r core of the two factors' QR
    decompositions, so the delta is never formed. Not the energy share itself as a loss: that is
    quadratic in how far the ranks part, so it has no gradient where they have folded together, and
    this has. A zero delta reads 0, without a gradient (QR's has none there). In fp32 (fp64 factors
    stay so) whatever the autocast: QR and SVD have no bf16 kernels."""
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    with torch.autocast(a.device.type, enabled=False):
        a, b = a.to(dtype), b.to(dtype)
        live = (a.square().sum((-1, -2)) * b.square().sum((-1, -2)) > 0)[..., None, None]
        _, rb = torch.linalg.qr(torch.where(live, b, torch.eye(*b.shape[-2:], dtype=dtype, device=b.device)))
        _, ra = torch.linalg.qr(torch.where(live, a, torch.eye(*a.shape[-2:], dtype=dtype, device=a.device)).transpose(-1, -2))
        s = torch.linalg.svdvals(rb @ ra.transpose(-1, -2))
        return torch.where(live[..., 0, 0], s[..., 1:].norm(dim=-1) / s.norm(dim=-1), 0.0)


def rank_spread(generated: dict[str, tuple[torch.Tensor, torch.Tensor]], target: float) -> torch.Tensor:
    """The ``spread`` objective: a hinge on each generated delta's ``distance_from_rank1`` below
    ``target``, averaged over documents, layers and roles. Rank-2 generators fold their ranks
    together in training (benchmarks/adapter_rank.md: the B columns turn parallel within 50 steps
    even from a rank-2 start) because nothing in the answer losses asks for a second direction;
    this asks for it directly, and stops once ``target`` is reached (trained exact LoRAs of the same
    paragraphs sit near 0.59: 35% of their energy beyond the top direction)."""
    dists = torch.cat([distance_from_rank1(a, b).flatten() for a, b in generated.values()])
    return torch.relu(target - dists).mean()
