"""benchmarks/contrast_decoding.py: the contrast is computed as documented and alpha 0 is greedy."""
import sys
from pathlib import Path

import torch

from conftest import random_adapter, tiny_model
from hyperprag.generation import generate_answers
from hyperprag.inject import inject
from hyperprag.prompts import build_prompt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from contrast_decoding import ContrastDecoding, ContrastRows  # noqa: E402


def test_contrast_rows_amplify_the_difference_and_mask_implausible_tokens():
    scores = torch.randn(4, 11, generator=torch.Generator().manual_seed(0)) * 3
    out = ContrastRows(alpha=2.0, beta=0.1)(torch.zeros(4, 3, dtype=torch.long), scores)
    assert torch.equal(out[:2], out[2:])  # both halves take the same token
    adapted, bare = torch.log_softmax(scores[:2], -1), torch.log_softmax(scores[2:], -1)
    plausible = adapted >= adapted.max(-1, keepdim=True).values + torch.log(torch.tensor(0.1))
    assert torch.equal(torch.isfinite(out[:2]), plausible)
    assert torch.allclose(out[:2][plausible], (3 * adapted - 2 * bare)[plausible], atol=1e-5)


def test_alpha_zero_answers_as_plain_greedy_and_closed_book_is_untouched(tokenizer):
    model = tiny_model()
    rows = [random_adapter(model, seed=s, scaling=200.0) for s in range(3)]
    prompts = [build_prompt(q) for q in ("Who built the tower?", "What colour is the flag?", "Where is it?")]
    with inject(model, rows):
        plain = generate_answers(model, tokenizer, prompts, 5)
    decoding = ContrastDecoding(alpha=0.0, beta=0.1)
    with decoding.inject(model, rows):
        assert decoding.paired
        assert decoding.generate_answers(model, tokenizer, prompts, 5) == plain
    assert not decoding.paired
    with decoding.inject(model, None):  # no adapters: plain greedy, no paired rows
        assert decoding.generate_answers(model, tokenizer, prompts, 5) == generate_answers(model, tokenizer, prompts, 5)


def test_first_word_only_contrasts_rows_until_their_first_word_has_begun(tokenizer):
    scores = torch.randn(4, tokenizer.vocab_size, generator=torch.Generator().manual_seed(1))  # no token masked
    processor = ContrastRows(alpha=2.0, beta=1e-9, first_word_only=True)
    processor.tokenizer, processor.prompt_len = tokenizer, 2
    word = tokenizer.convert_tokens_to_ids("hello")
    ids = torch.tensor([[5, 6, tokenizer.pad_token_id], [5, 6, word]] * 2)  # row 0: nothing yet; row 1: a word
    out = processor(ids, scores)
    adapted, bare = torch.log_softmax(scores[:2], -1), torch.log_softmax(scores[2:], -1)
    assert torch.allclose(out[0], 3 * adapted[0] - 2 * bare[0], atol=1e-5)
    assert torch.allclose(out[1], adapted[1], atol=1e-6)
