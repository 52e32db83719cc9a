"""Greedy, batched answer generation for a base model: left padding, stop at the end of the line."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .prompts import extract_answer


class StopAtNewline(StoppingCriteria):
    """Per-row stop once the row has written a newline after some text, the end of its answer line."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([bool(t.strip()) and "\n" in t.lstrip() for t in texts], device=input_ids.device)


@torch.inference_mode()
def generate_completions(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy completions of one batch of prompts, decoded without the prompt."""
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, return_token_type_ids=False)
    enc = enc.to(model.device)
    prompt_len = enc["input_ids"].shape[1]
    out = model.generate(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        max_new_tokens=max_new_tokens,
        do_sample=False,
        top_p=None, top_k=None, temperature=None,  # a base model's generation_config may set sampling knobs
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([StopAtNewline(tokenizer, prompt_len)]),
    )
    return tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)


def generate_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
    return [extract_answer(c) for c in generate_completions(model, tokenizer, prompts, max_new_tokens)]
