"""Where the hypernetwork's document embedding comes from: pluggable sources with a stable id.

The id is saved with a checkpoint, so a hypernetwork trained on one source refuses another.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .embedder import DEFAULT_EMBEDDER_ID, load_embedder
from .models import decoder_layers, model_id


class EmbeddingSource(Protocol):
    id: str
    dim: int
    # True: embed() gives one vector per token, (batch, tokens, dim), zero rows as padding, for the
    # hypernetwork's attention reader. False: one vector per document, (batch, dim).
    per_token: bool

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


class SentenceEmbedding:
    """A sentence-transformers embedder (default all-MiniLM-L6-v2, 384-d), normalised."""

    per_token = False

    def __init__(self, name_or_path: str | None = None, embedder=None):
        self.embedder = embedder or load_embedder(name_or_path)
        self.id = f"sentence:{name_or_path or DEFAULT_EMBEDDER_ID}"
        self.dim = self.embedder.get_embedding_dimension()

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embedder.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True,
                                    show_progress_bar=False).float().cpu()


class HiddenStateEmbedding:
    """Mean-pooled hidden states of the base model itself, at a middle and the last layer.

    This reads the document the way the model that will be adapted reads it; it costs one forward
    pass of the base model per document instead of one of a small embedder.
    """

    per_token = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layers: Sequence[int] | None = None,
                 max_tokens: int = 512):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        n = model.config.num_hidden_layers
        self.layers = list(layers) if layers is not None else [n // 2, n]
        self.id = f"hidden:{model_id(model)}:{','.join(map(str, self.layers))}"
        self.dim = model.config.hidden_size * len(self.layers)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
        # In small batches: every layer's hidden states are returned, ~0.4 GB per 16 long documents.
        self.tokenizer.padding_side = "right"
        chunks = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_tokens,
                                 return_token_type_ids=False).to(self.model.device)
            # The base model alone: the LM head's logits (262k a token for Gemma) are not needed.
            out = self.model.base_model(**enc, output_hidden_states=True)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = [(out.hidden_states[i].float() * mask).sum(1) / mask.sum(1) for i in self.layers]
            chunks.append(torch.nn.functional.normalize(torch.cat(pooled, dim=-1), dim=-1).cpu())
        return torch.cat(chunks)


class TokenEmbedding:
    """The mean of the base model's own input token embeddings: a bag of words in the model's
    vocabulary, with no forward pass at all.

    The cheap end of the trade-off: a document costs a tokenisation and a table lookup (well under a
    millisecond), so the hypernetwork, not the embedder, sets the encoding cost.
    """

    per_token = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_tokens: int = 512):
        self.table, self.tokenizer, self.max_tokens = model.get_input_embeddings(), tokenizer, max_tokens
        self.id = f"tokens:{model_id(model)}"
        self.dim = model.config.hidden_size

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens, add_special_tokens=False,
                              return_token_type_ids=False, return_attention_mask=False)["input_ids"]

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.token_ids(texts)
        device = self.table.weight.device
        # One lookup for the whole batch, then a mean per document over its own span.
        flat = torch.tensor([t for doc in ids for t in doc], device=device)
        owner = torch.repeat_interleave(torch.arange(len(ids), device=device),
                                        torch.tensor([len(doc) for doc in ids], device=device))
        sums = torch.zeros(len(ids), self.dim, device=device).index_add_(0, owner, self.table(flat).float())
        return torch.nn.functional.normalize(sums, dim=-1).cpu()


class TokenSequence(TokenEmbedding):
    """The base model's own input embedding of every token, unpooled: what the attention reader
    attends over. Like ``TokenEmbedding`` it needs no forward pass, so it is cheap enough to compute
    for each training batch instead of holding a corpus's tokens in memory.

    Padding rows are exact zeros (no token of a trained table embeds to exactly zero).
    """

    per_token = True

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_tokens: int = 256):
        super().__init__(model, tokenizer, max_tokens)
        self.id = f"token-seq:{model_id(model)}"

    @torch.no_grad()  # not inference_mode: the recipe trains on these tensors, batch by batch
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.token_ids(texts)
        if any(not doc for doc in ids):
            raise ValueError("a document with no tokens cannot be embedded token by token")
        lengths = torch.tensor([len(doc) for doc in ids])
        # One lookup for the whole batch; a single document needs no padded copy.
        rows = self.table(torch.tensor([t for doc in ids for t in doc], device=self.table.weight.device)).float().cpu()
        if len(ids) == 1:
            return rows[None]
        out = torch.zeros(len(ids), int(lengths.max()), rows.shape[-1])
        out[torch.arange(out.shape[1]) < lengths[:, None]] = rows   # row-major: document by document
        return out


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


class HiddenSequence(TokenSequence):
    """The base model's hidden state of every token after its first ``layer`` layers: token vectors
    that have read their context (which entity a number belongs to), for the attention reader.

    The question it answers: does the reader fail to bind a passage's facts because it sees each
    word alone? It costs a forward pass through ``layer`` layers per document, hundreds of
    milliseconds on one CPU thread against the speed bar's ~5 ms, so it is a probe, not a
    candidate for the CPU default. Rows line up with ``TokenSequence``'s (the BOS token the model
    needs is read but not returned); padding rows are zeros.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layer: int | None = None,
                 max_tokens: int = 256):
        super().__init__(model, tokenizer, max_tokens)
        self.model = model
        self.layer = layer if layer is not None else max(1, model.config.num_hidden_layers // 3)
        if not 0 < self.layer <= model.config.num_hidden_layers:
            raise ValueError(f"layer must be between 1 and {model.config.num_hidden_layers}, got {self.layer}")
        self.id = f"hidden-seq:{model_id(model)}:{self.layer}"

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return self._read(texts)[0].cpu()

    def _read(self, texts: Sequence[str], before: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The documents' hidden states (padding rows zeros), token ids and mask, BOS left out.
        ``before``: each token gets the state of the position before it (zeros for a first token
        with no BOS before it), the state from which the model predicts that token."""
        ids = self.token_ids(texts)
        if any(not doc for doc in ids):
            raise ValueError("a document with no tokens cannot be embedded token by token")
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        width = max(len(doc) for doc in ids) + len(bos)
        device = self.table.weight.device
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id or 0, device=device)
        mask = torch.zeros(len(ids), width, dtype=torch.long, device=device)
        for i, doc in enumerate(ids):
            input_ids[i, : len(bos) + len(doc)] = torch.tensor(bos + doc)
            mask[i, : len(bos) + len(doc)] = 1
        captured = []

        def keep(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop

        hook = decoder_layers(self.model)[self.layer - 1].register_forward_hook(keep)
        try:
            self.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        except _Stop:
            pass
        finally:
            hook.remove()
        states = captured[0]
        if before:
            states = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], dim=1)
        input_ids, mask = input_ids[:, len(bos):], mask[:, len(bos):]
        return states[:, len(bos):].float() * mask[..., None], input_ids, mask


class HiddenAndWords(HiddenSequence):
    """Each token as its hidden state after ``layer`` layers joined to its own input embedding,
    each part scaled to unit RMS: the reader attends over context and words, and the copy path
    (``copy_dim`` = the model's width) copies the words alone, which Gemma's LM head reads.

    Separates two things ``hidden-seq`` mixes up: reading tokens in context, and writing words.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layer: int | None = None,
                 max_tokens: int = 256):
        super().__init__(model, tokenizer, layer, max_tokens)
        self.id = f"hidden-seq+words:{model_id(model)}:{self.layer}"
        self.dim = 2 * model.config.hidden_size

    before = False  # whose hidden state joins a word: its own, or the position's before it

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        states, ids, mask = self._read(texts, self.before)
        return _join(states, self.table(ids).float() * mask[..., None]).cpu()   # one tokenisation for both


class HiddenKeyValue(HiddenAndWords):
    """Each token as a key-value pair for a reader with tied reads: the hidden state after ``layer``
    layers at the position *before* it (what the model has read when it is about to say the word)
    and the word's own input embedding. An adapter slot that fires on the key and writes the value
    is a memory "in this context, say this word"."""

    before = True

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layer: int | None = None,
                 max_tokens: int = 256):
        super().__init__(model, tokenizer, layer, max_tokens)
        self.id = f"hidden-kv:{model_id(model)}:{self.layer}"


class TokenKeyValue(TokenSequence):
    """``HiddenKeyValue`` without a forward pass: the key is the mean input embedding of the
    ``window`` tokens before each token (zeros for the first), the value the token's own. As cheap
    as ``token-seq`` (a cumulative sum more); in 80-step probes its extra lift was not about the
    passage (benchmarks/hyper_ablation.md, session 11)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, window: int | None = None,
                 max_tokens: int = 256):
        super().__init__(model, tokenizer, max_tokens)
        self.window = 4 if window is None else window
        if self.window < 1:
            raise ValueError(f"window must be at least 1 token, got {self.window}")
        self.id = f"token-kv:{model_id(model)}:{self.window}"
        self.dim = 2 * model.config.hidden_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        words = super().embed(texts)                                     # (b, t, d), padding zeros
        sums = torch.nn.functional.pad(words.cumsum(1), (0, 0, 1, 0))    # sums[:, j]: of words[:, :j]
        j = torch.arange(words.shape[1])
        start = (j - self.window).clamp_min(0)
        keys = (sums[:, j] - sums[:, start]) / (j - start).clamp_min(1)[:, None]
        return _join(keys, words) * (words.norm(dim=-1, keepdim=True) > 0)


def _join(*parts: torch.Tensor) -> torch.Tensor:
    """The parts side by side, each row of each scaled to unit RMS (zero rows stay zeros), so no
    part outweighs another in the reader's normalisation."""
    return torch.cat([p / p.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-12) for p in parts], dim=-1)


def build_source(spec: str, model: PreTrainedModel | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> EmbeddingSource:
    """``sentence`` / ``sentence:PATH``, ``hidden`` / ``hidden:MODEL:L1,L2``, ``tokens`` /
    ``tokens:MODEL``, ``token-seq`` / ``token-seq:MODEL``, ``hidden-seq`` / ``hidden-seq:MODEL:L``,
    ``hidden-seq+words`` / ``hidden-seq+words:MODEL:L``, ``hidden-kv`` / ``hidden-kv:MODEL:L`` or
    ``token-kv`` / ``token-kv:MODEL:WINDOW`` (as saved in checkpoints)."""
    kind, _, rest = spec.partition(":")
    if kind == "sentence":
        return SentenceEmbedding(None if rest in ("", DEFAULT_EMBEDDER_ID) else rest)
    layered = {"hidden-seq": HiddenSequence, "hidden-seq+words": HiddenAndWords, "hidden-kv": HiddenKeyValue,
               "token-kv": TokenKeyValue}
    if kind not in ("hidden", "tokens", "token-seq", *layered):
        raise ValueError(f"unknown embedding source {spec!r}; use 'sentence', 'hidden', 'tokens', 'token-seq', "
                         f"'hidden-seq', 'hidden-seq+words', 'hidden-kv' or 'token-kv'")
    if model is None or tokenizer is None:  # else it fails at the first document, far from the cause
        raise ValueError(f"the embedding source {spec!r} reads the base model: it needs the model and its tokenizer")
    if kind == "hidden":
        layers = [int(x) for x in rest.rsplit(":", 1)[-1].split(",")] if rest else None
        return HiddenStateEmbedding(model, tokenizer, layers)
    if kind == "tokens":
        return TokenEmbedding(model, tokenizer)
    if kind == "token-seq":
        return TokenSequence(model, tokenizer)
    # the number last: a layer, or token-kv's window; none: the default
    number = rest.rsplit(":", 1)[-1]
    return layered[kind](model, tokenizer, int(number) if number.isdigit() else None)
