"""Contrastive decoding for the parametric modes: does amplifying what the adapter changes help?

Generated adapters close far more of the in-context gap in answer loss (v8: 76% on SQuAD) than in
greedy F1 (34%): the right answer gains probability but often not the argmax. Context-aware decoding
(Shi et al., 2023) answers that for passages in the prompt by decoding from
``log p(y | with) + alpha * (log p(y | with) - log p(y | without))``; here "with" is the injected
adapter and "without" the bare model on the same prompt. Tokens the adapted model itself finds
implausible (``p < beta * max p``) are masked, as in Li et al.'s contrastive decoding, so the
difference cannot promote garbage.

It runs ``hyperprag bench`` unchanged except for decoding: every batch that carries adapters is run
twice over in one forward pass (its rows with their adapters, then the same prompts with none),
and both halves take the contrasted greedy token, so they stay in step. Closed-book and rag answers
are plain greedy. The wrong-document ablation goes through the same path, so specificity is
measured under the same decoding.

    .venv/bin/python benchmarks/contrast_decoding.py --alpha 1.0 -- bench --data ... --modes closed hyper --out out/x
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import LogitsProcessor, LogitsProcessorList

import hyperprag.evaluate as evaluate_module
from hyperprag.cli import main as hyperprag_main
from hyperprag.generation import generate_answers, generate_completions
from hyperprag.inject import inject
from hyperprag.prompts import extract_answer


class ContrastRows(LogitsProcessor):
    """Scores for 2n rows (n adapted, then the same n bare) -> the contrasted scores, on both halves."""

    def __init__(self, alpha: float, beta: float, first_word_only: bool = False):
        self.alpha, self.log_beta, self.first_word_only = alpha, math.log(beta), first_word_only
        self.tokenizer = None
        self.prompt_len: int | None = None  # None before a batch's first pick, which sets it

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = scores.shape[0] // 2
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        logp = torch.log_softmax(scores.float(), dim=-1)
        adapted, bare = logp[:n], logp[n:]
        alpha = torch.full((n, 1), self.alpha)
        if self.first_word_only:  # rows that have written something besides whitespace go on greedily
            written = self.tokenizer.batch_decode(input_ids[:n, self.prompt_len:], skip_special_tokens=True)
            alpha[[bool(t.strip()) for t in written]] = 0.0
        out = adapted + alpha * (adapted - bare)
        out = out.masked_fill(adapted < adapted.max(-1, keepdim=True).values + self.log_beta, float("-inf"))
        return torch.cat([out, out]).to(scores.dtype)


class ContrastDecoding:
    """Replaces evaluate's ``inject`` and ``generate_answers`` for the length of a bench run."""

    def __init__(self, alpha: float, beta: float, first_word_only: bool = False):
        self.processor = ContrastRows(alpha, beta, first_word_only)
        self.paired = False

    @contextmanager
    def inject(self, model, rows: Sequence | None) -> Iterator[None]:
        if rows is None:
            with inject(model, None):
                yield
            return
        rows = list(rows)
        self.paired = True
        try:
            with inject(model, rows + [None] * len(rows)):
                yield
        finally:
            self.paired = False

    def generate_answers(self, model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        if not self.paired:
            return generate_answers(model, tokenizer, prompts, max_new_tokens)
        prompts = list(prompts)
        self.processor.tokenizer, self.processor.prompt_len = tokenizer, None
        texts = generate_completions(model, tokenizer, prompts + prompts, max_new_tokens,
                                     logits_processor=LogitsProcessorList([self.processor]))[: len(prompts)]
        return [extract_answer(t) for t in texts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [--alpha A] [--beta B] -- bench ARGS...")
    parser.add_argument("--alpha", type=float, default=1.0, help="weight of the adapted-minus-bare difference (0: plain greedy)")
    parser.add_argument("--beta", type=float, default=0.1,
                        help="plausibility cut: tokens below beta x the adapted model's top probability are never picked")
    parser.add_argument("--first-word-only", action="store_true",
                        help="contrast only until the answer's first word has begun (its first token that is not "
                             "whitespace), then greedy on the adapted model: the first word is where greedy "
                             "answers go wrong, and contrasting every token invites repetition")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="a hyperprag command line (bench or eval)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a hyperprag command after --")
    if not 0 < args.beta <= 1:
        parser.error("--beta must be in (0, 1]")
    decoding = ContrastDecoding(args.alpha, args.beta, args.first_word_only)
    evaluate_module.inject, evaluate_module.generate_answers = decoding.inject, decoding.generate_answers
    return hyperprag_main(command)


if __name__ == "__main__":
    sys.exit(main())
