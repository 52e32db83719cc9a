"""Greedy (or seeded sampled), batched generation for a base model: left padding, early stop per row."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .prompts import extract_answer


class StopAfter(StoppingCriteria):
    """Per-row stop once the row has written ``stop`` after some text (a newline ends an answer line)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_len: int, stop: str):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([self.stop in t.lstrip() for t in texts], device=input_ids.device)


@torch.inference_mode()
def generate_completions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                         max_new_tokens: int = 32, stop: str = "\n", temperature: float = 0.0, seed: int | None = None,
                         logits_processor: LogitsProcessorList | None = None) -> list[str]:
    """Completions of one batch of prompts, decoded without the prompt; greedy unless ``temperature``.
    ``logits_processor`` reshapes the scores before each pick (benchmarks try other decodings with it)."""
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, return_token_type_ids=False)
    enc = enc.to(model.device)
    prompt_len = enc["input_ids"].shape[1]
    if seed is not None:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95, "top_k": None} if temperature > 0 \
        else {"do_sample": False, "top_p": None, "top_k": None, "temperature": None}
    out = model.generate(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([StopAfter(tokenizer, prompt_len, stop)]),
        logits_processor=logits_processor,
        **sampling,
    )
    return tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)


def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                     max_new_tokens: int = 32) -> list[str]:
    return [extract_answer(c) for c in generate_completions(model, tokenizer, prompts, max_new_tokens)]
