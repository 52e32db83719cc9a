"""The hypernetwork: a document embedding in, a LoRA for every FFN projection of every layer out.

One compact trunk is shared by all (layer, module) pairs, told apart by learned layer and role
embeddings (the Text-to-LoRA design) rather than one MLP per module (DyPRAG's 37.8M parameters).
Heads are per role because gate/up and down have different shapes. The output has the exact
encoder's rank and scaling, so merge and injection are shared code.

Two readers of the document. ``pooled`` takes one vector per document. ``attention`` takes one
vector per token (Doc-to-LoRA's reading of token activations rather than one pooled vector): a
learned query per (layer, role, factor, rank) attends over the tokens, and the attended mix of
token vectors is mapped linearly onto that factor. A pooled vector blurs the words a passage is
made of; with the base model's own token embeddings as input, an adapter can write those very
words' directions (the LM head is tied to them in Gemma) into the residual stream.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from .models import FFNTarget

# Optimiser steps taken in this process, by any torch optimiser. Fused ones (AdamW(fused=True))
# update weights in kernels that leave a tensor's version counter as it was, so the counter alone
# would keep serving what older weights made.
_optimizer_steps = [0]


def _count_step(optimizer, args, kwargs) -> None:
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_step)


def weights_stamp(module: nn.Module) -> tuple:
    """Changes when a module's weights or buffers may have: each tensor's version counter (in-place
    ops, as an optimiser step or a load), storage and dtype (a move), and the optimiser steps taken
    (fused steps bypass the counter), for the caches that are kept until then. Writes through
    ``.data`` are not seen."""
    tensors = (*module.parameters(), *module.buffers())
    return _optimizer_steps[0], tuple((t._version, t.data_ptr(), t.dtype) for t in tensors)


@dataclass
class HyperNetConfig:
    embed_dim: int                       # size of the document embedding fed in
    num_layers: int
    roles: dict[str, tuple[int, int]]    # role -> (in_features, out_features), same in every layer
    rank: int = 2
    alpha: float = 32.0
    hidden: int = 256
    init_scale: float = 0.01             # generated deltas start small: the model starts as the base
    # The heads' weights are multiplied by this in the forward pass. Each generated factor entry sums
    # ``hidden`` weights, so under Adam (every weight moves ~lr a step) it moves ~hidden x faster than
    # a LoRA factor trained directly; 1/hidden brings it back to a LoRA's pace, so one lr suits the
    # trunk and the heads (at 1.0, lr above ~1e-5 diverged). 1.0 in checkpoints from before the option.
    head_multiplier: float = 1.0
    # Subtract what the generator gives every document alike: in training the batch's mean B (so a
    # one-adapter-for-all solution earns nothing), at inference the mean B over the training
    # documents (a buffer set by the recipe). Without it, a probe learned a pairwise cosine of
    # 0.999; centring the input embedding instead still gave 0.979.
    center: bool = False
    # "pooled": (batch, embed_dim) in. "attention": (batch, tokens, embed_dim) in, rows of zeros
    # being padding. "pooled" in checkpoints from before the option.
    reader: str = "pooled"
    # Attention reader only: a factor living in the token vectors' own space (gate/up's A reads the
    # residual stream, down's B writes to it, when the source is the model's input embeddings) also
    # gets the attended tokens' unit vectors themselves, times a learned gain per (layer, slot) that
    # starts at 0. Then an adapter can fire on a passage's words (A) and write a passage's words (B;
    # Gemma's LM head is its input embedding) without first learning a map to do so.
    copy_tokens: bool = False
    # Attention reader only: each read map (a token mix of the source's size -> a factor) goes through
    # this many dimensions first. The full maps were 60% of v1's forward pass; a trained map is
    # close to low-rank (benchmarks/hyper_speed.md), and ``load_factored`` starts a bottlenecked
    # network from a full one by truncated SVD. None: full maps (checkpoints from before the option).
    read_rank: int | None = None
    # Attention reader only: before the queries read them, the normalised token vectors get a
    # learned per-channel mix of their neighbours within this (odd) window, starting at zero. A token
    # vector alone cannot say what role a word plays ("1996" after "founded in"); its neighbours can,
    # for ~d x window weights and well under a millisecond. None: no context (earlier checkpoints).
    context_kernel: int | None = None
    # Copy path only: copy the last ``copy_dim`` channels of each token vector rather than all of
    # it, for a source whose vectors join a context part (read, not copied) to the word's own
    # embedding (copied). None: the whole vector.
    copy_dim: int | None = None
    # Attention reader only: one read per (layer, rank) shared by every role and factor, instead of
    # one per (role, factor, layer, rank). Then a rank-1 piece of an adapter is made from one place
    # in the passage: its A rows (what it fires on) and B columns (what it writes) can bind a key to
    # its value, e.g. the context before a word (a ``*-kv`` source's first part) to the word itself.
    # Untied, the A a slot fires on and the B it writes come from unrelated tokens. That binding did
    # not show in probes (benchmarks/hyper_ablation.md, session 11), but one token mix serving six
    # slots halves the network's time at batch 1.
    tie_reads: bool = False
    # Copy path with ``copy_dim`` only: the A rows (what a slot fires on) copy the channels before
    # the last ``copy_dim`` (a ``*-kv`` source's key) and the B columns the last ``copy_dim`` (the
    # word). Then a slot is a key-value memory from the start, "in this context, say this word",
    # instead of firing on the very word it writes.
    copy_keys: bool = False
    # Attention reader only: A's output bias is one vector per (layer, rank row), each drawn like a
    # LoRA's A, on top of the one vector shared by every row. With the shared vector alone every row
    # of A starts as the same vector (the read term is ~init_scale smaller), gets nearly the same
    # gradient and stays there: a rank-r adapter of rank 1 (v8: its two A rows parallel,
    # benchmarks/adapter_rank.md). The pooled heads always had a bias per row. It parts the A rows
    # only: B's columns differ only where the ranks' reads do, and those are nearly the same, so a
    # warm start from v8 with it still made rank-1 deltas. False in checkpoints before session 34.
    row_bias: bool = False
    # Attention reader only: each (layer, rank) column of B reads its token mix through its own
    # per-channel gain (on the bottleneck with ``read_rank``), drawn in [0, 2] with a mean of 1
    # over the ranks. A rank's A row and B column are made from that rank's read, and the ranks'
    # reads are nearly the same (cos 0.994 in v8): through one shared map the B columns come out
    # parallel whatever A does, and the delta is rank 1. The gains make the columns different
    # functions of the same read: a fresh network of v8's shape with ``row_bias`` then makes deltas
    # with 13-15% of their energy beyond the top direction (10 SQuAD paragraphs), 0% without the
    # gains; trained LoRAs have 35%. But training turned the columns parallel again within 50 steps
    # from scratch, and did not part a warm start's (benchmarks/adapter_rank.md): the gains allow
    # rank 2, nothing in the loss rewards it. False in checkpoints before session 35.
    b_gain: bool = False

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_targets(cls, targets: list[FFNTarget], embed_dim: int, **kw) -> HyperNetConfig:
        roles: dict[str, tuple[int, int]] = {}
        for t in targets:
            shape = roles.setdefault(t.role, (t.in_features, t.out_features))
            if shape != (t.in_features, t.out_features):
                raise ValueError(f"role {t.role} has different shapes across layers; not supported")
        return cls(embed_dim=embed_dim, num_layers=max(t.layer for t in targets) + 1,
                   roles=roles, **kw)


class ReadSlot(NamedTuple):
    """One (role, factor) of the attention reader, as its forward pass uses it."""
    role: str
    factor: str                   # "a" or "b"
    bottleneck: torch.Tensor | None   # (read_rank, d), or None: full maps
    weight: torch.Tensor          # the output map's, times head_multiplier: (fan, read_rank or d)
    bias: torch.Tensor            # (fan,), or (L, r, fan): less the stored mean B, or with A's row biases
    gain: torch.Tensor | None     # copy gain (L, r, 1), or None: no copy path
    read_gain: torch.Tensor | None  # B's per-(layer, rank) gain on what the output map reads (L, r, read_rank or d)


class ReaderPlan(NamedTuple):
    """The attention reader's weights, folded for its forward pass (``HyperNetwork._reader_plan``)."""
    part_queries: torch.Tensor    # (2r + L + roles, d): slot, layer and role queries in token space; tied: (r + L, d)
    slot_factor: torch.Tensor     # per slot, its factor's index (0: A, 1: B) into the slot queries
    slot_role: torch.Tensor       # per slot, its role's index
    slots: list[ReadSlot]


class HyperNetwork(nn.Module):
    def __init__(self, config: HyperNetConfig):
        super().__init__()
        self.config = config
        if config.reader not in ("pooled", "attention"):
            raise ValueError(f"unknown reader {config.reader!r}; use 'pooled' or 'attention'")
        for option in ("copy_tokens", "context_kernel", "tie_reads", "row_bias", "b_gain"):
            if getattr(config, option) and config.reader != "attention":
                raise ValueError(f"{option} needs the attention reader (a per-token embedding source, token-seq)")
        if config.copy_dim is not None and not config.copy_tokens:
            raise ValueError("copy_dim sets what the copy path copies; it needs copy_tokens")
        if config.copy_keys and config.copy_dim is None:
            raise ValueError("copy_keys copies the channels before copy_dim into A rows; it needs copy_dim")
        if config.copy_dim is not None and not 0 < config.copy_dim <= config.embed_dim - bool(config.copy_keys):
            raise ValueError(f"copy_dim must be between 1 and the embedding's {config.embed_dim} channels"
                             f"{' less one (copy_keys copies the channels before it)' if config.copy_keys else ''}, "
                             f"got {config.copy_dim}")
        if config.reader == "attention":
            self._init_attention_reader()
        else:
            self._init_pooled_reader()

    def _init_shared(self) -> None:
        """Layer and role embeddings (none for tied reads, whose queries have no role), and the
        centring buffers."""
        cfg, h = self.config, self.config.hidden
        self.layer_embed = nn.Embedding(cfg.num_layers, h)
        if not cfg.tie_reads:
            self.role_embed = nn.ParameterDict({r: nn.Parameter(torch.zeros(h)) for r in cfg.roles})
        if cfg.center:
            for role, (_, fan_out) in cfg.roles.items():
                self.register_buffer(f"b_mean_{role}", torch.zeros(cfg.num_layers, fan_out, cfg.rank))

    def _init_attention_reader(self) -> None:
        cfg, h, d = self.config, self.config.hidden, self.config.embed_dim
        self._init_shared()
        nn.init.normal_(self.layer_embed.weight, std=0.02)
        self.token_norm = nn.LayerNorm(d)
        self.key = nn.Linear(d, h)
        # Only its weight is used: a bias adds one constant to every token's score for a query and
        # cancels in the softmax. Untrained, so that several processes' DDP sees no idle parameter.
        self.key.bias.requires_grad_(False)
        # A rows then B columns, or one per rank when A and B share their reads
        self.slot_embed = nn.Parameter(torch.randn((1 if cfg.tie_reads else 2) * cfg.rank, h) * 0.02)
        # Per role, the attended token mix -> an A row (fan_in) and a B column (fan_out), the same
        # maps in every layer: the layer's queries choose what each layer's factors are made of.
        self.read_a = nn.ModuleDict({r: self._read_map(d, fan_in) for r, (fan_in, _) in cfg.roles.items()})
        self.read_b = nn.ModuleDict({r: self._read_map(d, fan_out) for r, (_, fan_out) in cfg.roles.items()})
        if cfg.copy_tokens:
            copied = {"a": d - cfg.copy_dim if cfg.copy_keys else cfg.copy_dim or d, "b": cfg.copy_dim or d}
            self.copy_gain = nn.ParameterDict({
                f"{role}_{factor}": nn.Parameter(torch.zeros(cfg.num_layers, cfg.rank))
                for role, dims in cfg.roles.items() for factor, dim in zip("ab", dims) if dim == copied[factor]})
            if not self.copy_gain:
                raise ValueError(f"copy_tokens: no target reads or writes vectors of the copied size {copied}")
        if cfg.context_kernel is not None:
            if cfg.context_kernel < 3 or cfg.context_kernel % 2 == 0:
                raise ValueError(f"context_kernel must be odd and at least 3, got {cfg.context_kernel}")
            self.context = nn.Conv1d(d, d, cfg.context_kernel, padding=cfg.context_kernel // 2, groups=d, bias=False)
            nn.init.zeros_(self.context.weight)  # starts as the reader without context
        fan = cfg.read_rank or d  # what the output map reads: the bottleneck, or the token mix
        for role, (fan_in, _) in cfg.roles.items():  # a LoRA's init, as for the pooled heads below
            for read_map in (self.read_a[role], self.read_b[role]):
                nn.init.normal_(self._output_of(read_map).weight, std=cfg.init_scale / fan ** 0.5)
                nn.init.zeros_(self._output_of(read_map).bias)
            if not cfg.row_bias:
                nn.init.uniform_(self._output_of(self.read_a[role]).bias, -1 / fan_in ** 0.5, 1 / fan_in ** 0.5)
        if cfg.row_bias:
            self.a_row_bias = nn.ParameterDict({
                role: nn.Parameter(torch.empty(cfg.num_layers, cfg.rank, fan_in).uniform_(-fan_in ** -0.5, fan_in ** -0.5))
                for role, (fan_in, _) in cfg.roles.items()})
        if cfg.b_gain:
            self.b_read_gain = nn.ParameterDict({
                role: nn.Parameter(self.draw_b_gain(cfg.num_layers, cfg.rank, fan)) for role in cfg.roles})

    @staticmethod
    def draw_b_gain(layers: int, rank: int, fan: int) -> torch.Tensor:
        """Gains apart across the ranks (in [0, 2]) with a mean of exactly 1 over them, so that on
        average a column reads as it would without them: see ``HyperNetConfig.b_gain``."""
        u = torch.empty(layers, rank, fan).uniform_(-1.0, 1.0)
        return 1 + u - u.mean(1, keepdim=True)

    def _read_map(self, d: int, fan: int) -> nn.Module:
        k = self.config.read_rank
        if k is None:
            return nn.Linear(d, fan)
        if not 0 < k < d:
            raise ValueError(f"read_rank must be between 1 and the embedding size {d}, got {k}")
        return nn.Sequential(nn.Linear(d, k, bias=False), nn.Linear(k, fan))

    @staticmethod
    def _output_of(read_map: nn.Module) -> nn.Linear:
        """The linear map that writes the factor: the whole map, or the one after the bottleneck."""
        return read_map[1] if isinstance(read_map, nn.Sequential) else read_map

    @torch.no_grad()
    def load_factored(self, state: dict[str, torch.Tensor]) -> None:
        """Load a network with full read maps into this one, whose maps have a bottleneck: each map
        W becomes (U S^1/2)(S^1/2 V^T) truncated to ``read_rank``, the closest map of that rank. The
        warm start for a faster network: it keeps what the full one learned, up to the truncation."""
        k, state = self.config.read_rank, dict(state)
        if k is None:
            raise ValueError("load_factored loads into a network with read_rank set")
        for kind in ("read_a", "read_b"):
            for role in self.config.roles:
                u, s, vh = torch.linalg.svd(state.pop(f"{kind}.{role}.weight").float(), full_matrices=False)
                state[f"{kind}.{role}.0.weight"] = s[:k, None].sqrt() * vh[:k]
                state[f"{kind}.{role}.1.weight"] = u[:, :k] * s[:k].sqrt()
                state[f"{kind}.{role}.1.bias"] = state.pop(f"{kind}.{role}.bias")
        self.load_state_dict(state)

    @staticmethod
    def tied_state(state: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
        """An untied attention reader's weights for one with ``tie_reads``: each (layer, rank)'s one
        query starts as the mean of its six (factor x role) queries, which, the parts adding up, is
        the mean slot embedding plus the layer's plus the mean role embedding. The read maps, copy
        gains and centring are kept. The warm start for the faster reader."""
        state = dict(state)
        roles = [state.pop(k) for k in sorted(k for k in state if k.startswith("role_embed."))]
        slots = state["slot_embed"].view(2, rank, -1)
        state["slot_embed"] = slots.mean(0) + torch.stack(roles).mean(0)
        return state

    def _init_pooled_reader(self) -> None:
        config, h = self.config, self.config.hidden
        self.trunk = nn.Sequential(nn.LayerNorm(config.embed_dim), nn.Linear(config.embed_dim, h), nn.GELU(),
                                   nn.Linear(h, h))
        self._init_shared()
        self.mixer = nn.Sequential(nn.GELU(), nn.LayerNorm(h), nn.Linear(h, h), nn.GELU())
        self.heads = nn.ModuleDict({r: nn.Linear(h, config.rank * (fan_in + fan_out))
                                    for r, (fan_in, fan_out) in config.roles.items()})
        nn.init.normal_(self.layer_embed.weight, std=0.02)
        # Like a LoRA's init: A starts as a random projection (in the bias, PEFT's kaiming range), B
        # near zero. Were both near zero, each factor's gradient (proportional to the other) would vanish.
        for role, head in self.heads.items():
            fan_in = config.roles[role][0]
            nn.init.normal_(head.weight, std=config.init_scale / h ** 0.5)
            with torch.no_grad():
                head.bias.zero_()
                head.bias[: config.rank * fan_in].uniform_(-1 / fan_in ** 0.5, 1 / fan_in ** 0.5)

    def forward(self, embeddings: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``embeddings`` (batch, embed_dim), or (batch, tokens, embed_dim) for the attention reader,
        -> per role (A, B) of shapes (batch, layers, r, in) and (batch, layers, out, r)."""
        center = self.config.center
        # B transposed, (batch, layers, r, out): rows, as made. At inference the stored mean is
        # subtracted while they are made; in training the batch's own mean, after.
        out = self._generate(embeddings, centred=center and not self.training)
        if center and self.training:
            if embeddings.shape[0] < 2:
                raise ValueError("a centred hypernetwork trains on at least two documents a batch")
            out = {r: (a, bt - bt.mean(0, keepdim=True)) for r, (a, bt) in out.items()}
        return {r: (a, rearrange(bt, "b l r o -> b l o r")) for r, (a, bt) in out.items()}

    def _mean_b_rows(self, role: str) -> torch.Tensor:
        """The stored mean B of a role as rows, (layers, r, out), made contiguous: a broadcast read
        along its strided axis is slow."""
        return getattr(self, f"b_mean_{role}").transpose(-1, -2).contiguous()

    @torch.no_grad()
    def set_center(self, batches: Iterable[torch.Tensor]) -> None:
        """Store the mean generated B over the training documents' embeddings, given in batches
        (token-level embeddings of a whole corpus would not fit in memory at once), for inference."""
        sums, count = None, 0
        for emb in batches:
            part = {r: bt.sum(0).transpose(-1, -2) for r, (_, bt) in self._generate(emb, centred=False).items()}
            sums = part if sums is None else {r: sums[r] + part[r] for r in sums}
            count += emb.shape[0]
        if not count:
            raise ValueError("set_center needs the embeddings of at least one document")
        for r, total in sums.items():
            getattr(self, f"b_mean_{r}").copy_(total / count)

    def _generate(self, embeddings: torch.Tensor, centred: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per role (A, B transposed); ``centred``: less the stored mean B."""
        want = 3 if self.config.reader == "attention" else 2
        if embeddings.dim() != want:
            raise ValueError(f"the {self.config.reader} reader takes {want}-d embeddings, got shape "
                             f"{tuple(embeddings.shape)}: is the embedding source the one it was built for?")
        return self._attend(embeddings, centred) if want == 3 else self._pool(embeddings, centred)

    def _slots(self) -> list[tuple[str, str]]:
        """Every (role, factor) the reader makes, those with a copy gain first: then their attention
        weights are one contiguous block for the copy path."""
        gains = self.copy_gain if self.config.copy_tokens else {}
        return sorted(((r, f) for r in self.config.roles for f in "ab"), key=lambda s: f"{s[0]}_{s[1]}" not in gains)

    def _reader_plan(self, centred: bool) -> ReaderPlan:
        """What the attention reader computes from its weights alone, folded for the forward pass:

        - the queries' parts taken into token space through the key map. A query is the sum of a
          slot (factor, rank), a layer and a role embedding, and its score for a token is
          q . (W x + c) = (q W) . x + q . c, where q . c is the same for every token, which the
          softmax ignores. So no key is computed per token, and a score is the sum of three parts'
          scores: 2r + L + roles dot products a token instead of one per query (4 + 18 + 3 against
          216 for Gemma 3 270M). Tied reads have no factor or role part: r + L;
        - ``head_multiplier`` folded into the output maps' weights;
        - at inference, the stored mean B folded into the output maps' bias (one matrix per layer).

        Without autograd the plan is kept until a weight or buffer changes (``weights_stamp``: in
        place, as an optimiser step, a load or ``set_center`` does, or by a move)."""
        cfg = self.config
        device = self.slot_embed.device.type   # a plan built under autocast holds low-precision queries
        stamp = (centred, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device), weights_stamp(self))
        cached = getattr(self, "_plan_cache", None)
        if not torch.is_grad_enabled() and cached is not None and cached[0] == stamp:
            return cached[1]
        parts = [self.slot_embed, self.layer_embed.weight]
        if not cfg.tie_reads:
            parts.append(torch.stack([self.role_embed[r] for r in cfg.roles]))
        parts = torch.cat(parts)
        gains = self.copy_gain if cfg.copy_tokens else {}
        slots = []
        for role, factor in self._slots():
            read_map = getattr(self, f"read_{factor}")[role]
            out = self._output_of(read_map)
            bias = out.bias
            if centred and factor == "b":
                bias = (bias - self._mean_b_rows(role)).contiguous()     # (L, r, out)
            if factor == "a" and cfg.row_bias:
                bias = bias + self.a_row_bias[role]                        # (L, r, in)
            gain = gains[f"{role}_{factor}"][..., None] if f"{role}_{factor}" in gains else None
            read_gain = self.b_read_gain[role] if factor == "b" and cfg.b_gain else None
            slots.append(ReadSlot(role, factor, None if out is read_map else read_map[0].weight,
                                  out.weight * cfg.head_multiplier, bias, gain, read_gain))
        plan = ReaderPlan(parts @ self.key.weight / cfg.hidden ** 0.5,
                          torch.tensor(["ab".index(s.factor) for s in slots]),
                          torch.tensor([list(cfg.roles).index(s.role) for s in slots]), slots)
        if not torch.is_grad_enabled():
            self._plan_cache = (stamp, plan)
        return plan

    def reads(self, tokens: torch.Tensor, plan: ReaderPlan,
              norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention weights over the tokens, (b, reads * L * r, t), and each read's token mix,
        (b, reads, L, r, d), where reads is 1 with tied reads, else one per slot of ``plan``: what
        the factors are made of, and where a diagnostic sees what each rank reads
        (benchmarks/adapter_rank). ``norms``: the tokens' norms, if the caller has them."""
        cfg, (b, t, d) = self.config, tokens.shape
        L, r = cfg.num_layers, cfg.rank
        padding = (tokens.norm(dim=-1) if norms is None else norms) == 0   # rows of zeros
        x = self.token_norm(tokens)                                      # (b, t, d)
        if cfg.context_kernel is not None:  # padding must not leak into the last tokens' context
            xc = x.masked_fill(padding[..., None], 0.0) if padding.any() else x
            x = x + self.context(xc.mT).mT
        part_scores = torch.bmm(plan.part_queries.expand(b, -1, -1), x.mT)   # (b, parts, t)
        if cfg.tie_reads:  # one read per (layer, rank), shared by every slot
            by_slot, by_layer = part_scores.split([r, L], dim=1)
            scores = (by_layer[:, :, None] + by_slot[:, None]).reshape(b, L * r, t)
            reads = 1
        else:
            by_slot, by_layer, by_role = part_scores.split([2 * r, L, len(cfg.roles)], dim=1)
            by_slot = by_slot.view(b, 2, r, t)[:, plan.slot_factor]      # (b, slots, r, t)
            scores = (by_slot[:, :, None] + by_layer[:, None, :, None]
                      + by_role[:, plan.slot_role][:, :, None, None]).reshape(b, -1, t)   # (b, slots*L*r, t)
            reads = len(plan.slots)
        if padding.any():
            scores = scores.masked_fill(padding[:, None, :], float("-inf"))
        weights = scores.softmax(-1)
        # Every read's token mix in one batched product rather than six small ones.
        return weights, (weights @ x).view(b, reads, L, r, d)

    def _attend(self, tokens: torch.Tensor, centred: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        cfg, (b, t, d) = self.config, tokens.shape
        L, r = cfg.num_layers, cfg.rank
        plan = self._reader_plan(centred)
        norms = tokens.norm(dim=-1)                                      # (b, t)
        weights, mixed = self.reads(tokens, plan, norms)
        # Copy path: the attended tokens' unit vectors times sqrt(d) (entries of order 1, so the gains
        # move a factor at the pace Adam moves a LoRA's own entries, as head_multiplier does for the
        # heads). The slots with a gain come first; the per-token rescaling is applied to their
        # weights, the smaller tensor. A vector of zeros (padding, a key-value source's first key) has
        # no direction and copies nothing: scaled by 1/1e-12 it overflowed fp16 and gave inf x 0 = NaN.
        copied = sum(s.gain is not None for s in plan.slots)
        if copied:
            copied = 1 if cfg.tie_reads else copied

            def attended_units(part: torch.Tensor, part_norms: torch.Tensor) -> torch.Tensor:
                scale = (part.shape[-1] ** 0.5 / part_norms.clamp_min(1e-12)).masked_fill(part_norms == 0, 0.0)
                scale = scale[:, None, :]
                return ((weights[:, : copied * L * r] * scale) @ part).view(b, copied, L, r, part.shape[-1])

            values = tokens[..., d - cfg.copy_dim:] if cfg.copy_dim else tokens
            words = {"b": attended_units(values, values.norm(dim=-1) if cfg.copy_dim else norms)}
            keys = tokens[..., : d - cfg.copy_dim] if cfg.copy_keys else None   # copy_keys: A copies these
            words["a"] = attended_units(keys, keys.norm(dim=-1)) if keys is not None else words["b"]
        made: dict[str, dict[str, torch.Tensor]] = {}
        for i, s in enumerate(plan.slots):
            read = 0 if cfg.tie_reads else i
            z = mixed[:, read] if s.bottleneck is None else F.linear(mixed[:, read], s.bottleneck)
            if s.read_gain is not None:
                z = z * s.read_gain
            row = F.linear(z, s.weight).add_(s.bias)                     # (b, L, r, fan)
            if s.gain is not None:
                row.addcmul_(s.gain, words[s.factor][:, read])
            made.setdefault(s.role, {})[s.factor] = row
        return {role: (made[role]["a"], made[role]["b"]) for role in cfg.roles}   # (b, L, r, in), (b, L, r, out)

    def _pool(self, embeddings: torch.Tensor, centred: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        doc = self.trunk(embeddings)                                     # (b, h)
        layers = self.layer_embed.weight                                 # (L, h)
        out = {}
        for role, (fan_in, fan_out) in cfg.roles.items():
            z = self.mixer(doc[:, None, :] + layers[None] + self.role_embed[role])   # (b, L, h)
            head = self.heads[role]
            flat = F.linear(z, head.weight) * cfg.head_multiplier + head.bias   # (b, L, r*(in+out))
            a, b = flat.split([cfg.rank * fan_in, cfg.rank * fan_out], dim=-1)
            bt = rearrange(b, "b l (o r) -> b l r o", r=cfg.rank)
            out[role] = (rearrange(a, "b l (r i) -> b l r i", r=cfg.rank),
                         bt - self._mean_b_rows(role) if centred else bt)
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
