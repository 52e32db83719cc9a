"""Train the hypernetwork (document embedding -> FFN LoRA). Readable top to bottom.

    .venv/bin/accelerate launch --quiet --num_processes 1 training/train_hypernet.py training/configs/squad_minilm.yaml
    .venv/bin/accelerate launch --quiet --multi_gpu --num_processes 2 training/train_hypernet.py CONFIG  # no GPU: 2 CPU processes, gloo
    .venv/bin/accelerate launch --quiet --multi_gpu --num_processes 8 training/train_hypernet.py CONFIG  # 8 GPUs, unchanged

Documents come from question files in the shared JSONL shape; a question with exactly one passage
(SQuAD) gives that passage a QA pair. Passages of the ``augmented`` files (any corpus or question
file) come with the QA pairs the base model wrote about them (``hyperprag augment``, whose printed
cache directory is ``augment_cache``). Passages of the ``passages`` files need no questions at all:
they train only the ``doc`` objective. Both leave out the passages of each file's first
``skip_first_questions`` questions, which the benchmarks evaluate on. Documents are split by
content hash: a fixed fraction is held aside and never trained on (its hashes are written next to
the checkpoint). Objectives and their weights come from the YAML config: ``lm`` (answer loss
with the generated adapter), ``doc`` (the first ``doc_words`` words of a passage after its title,
with its generated adapter and not in the prompt, as the exact recipe's rewrites teach it;
``passages_per_step`` passages drawn from all a step), ``kl`` (distillation from the in-context
teacher), ``recon`` (distance to exact adapters in a store, as deltas) and ``contrast`` (a
question's own document's adapter must beat another's) and ``retrieved`` (the answers of the
``retrieved`` files' questions, ``retrieved_per_step`` a step, each answered with the merged
generated adapters of its top ``top_k`` passages by BM25 among its own candidates: what the
benchmark does on HotpotQA and PopQA, multi-passage questions included; questions whose top
passages belong to the first ``skip_first_questions`` questions are left out) and
``retrieved_contrast`` (each of those questions must be answered better, by ``contrast_margin``
nats, with its own top passages' adapters than with another question's: a generated adapter that
teaches an answer's form, yes/no or one of two names, whatever the passage, gains nothing there)
and ``sibling`` (at its first token each answer must beat another answer of the same document by
``contrast_margin`` nats: binding, where the adapter raises all of its passage's names together).
``embedding`` picks the document embedding: ``token-seq`` (one vector per token, looked up for
each batch) gives the hypernetwork its attention reader, ``copy_tokens`` its copy path, and
``context_kernel`` a window of neighbouring tokens mixed into each token before it is read;
``copy_dim`` makes the copy path copy only the last that many channels (the words' part of
``hidden-seq+words``, ``hidden-kv`` and ``token-kv``), and ``tie_reads`` makes every role and
factor of a (layer, rank) read the same tokens, so a key (what an A fires on) binds to a value (what
a B writes); ``copy_keys`` has the copy path copy a ``*-kv`` source's key into A rows and its word
into B columns. ``row_bias`` gives each rank row of the attention reader's A its own bias, drawn
like a LoRA's A; without it the rows start alike and stay alike (v8's rank-2 adapters are
rank 1, ``benchmarks/adapter_rank.md``; with it alone the B columns still stay parallel).
``b_gain`` gives each rank column of B its own per-channel gain on the read, so the columns part
too even where the ranks read alike. ``rank_lr_scale`` multiplies the learning rate of those gains
and of A's row biases: at a warm start's lr of 1e-4 an order-1 gain hardly moves in a short run.
``spread`` (an objective) asks every generated delta to lie at least ``spread_target`` (relative)
from its best rank-1 approximation, a hinge: with the answer losses alone a from-scratch run folds
its ranks into one (``benchmarks/adapter_rank.md``). The default 0.5 is 25% of the delta's energy
beyond its top direction; trained exact LoRAs have about 35%.
With ``merge_k`` above 1, answers are trained with the summed adapters of the own document and up
to k - 1 others. Summed, although retrieval averages generated adapters: the sum adds a part every
document shares k times, so that part cannot be what answers the question.
The run checkpoints every ``save_every`` steps and resumes from the last one; ``snapshot_every``
also keeps a loadable checkpoint at those steps (``out/step-N``), for a learning curve.
``read_rank`` puts a bottleneck in the attention reader's read maps (faster to run), and
``init_from`` starts from a trained checkpoint (a full-map one is factored by truncated SVD; one
without the context gets it at zero; an untied one is tied, each query the mean of those it replaces;
one without ``row_bias`` gets A row biases that sum to zero over the rows, and one without
``b_gain`` B gains of 1).
``first_token_weight`` counts each answer's first word (its first token that is not whitespace)
that many times in the ``lm`` and ``retrieved`` losses: greedy decoding must pick that word, and
the mean answer loss, which the tokens after it and the closing newline dilute, can fall a long
way while the word stays wrong.
``max_minutes`` bounds the run's wall-clock time (resumes included), for a machine lent for a
fixed time: the run then ends at ``steps`` or at the budget, whichever comes first, and the
learning rate's cosine follows whichever is nearer its end, so a cut run still ends annealed.
``mixed_precision: bf16`` runs each step's forward passes under bf16 autocast (weights, optimiser
and checkpoints stay fp32): 1.1-1.2x the steps a minute on this project's 2-core CPU
(``benchmarks/train_step_dtype.py``), and the usual choice on a GPU. Unset, the launcher's
``--mixed_precision`` decides (``no`` by default).
"""
from __future__ import annotations

import argparse
import collections.abc
import copy
import json
import math
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from tqdm.auto import tqdm

from hyperprag.adapter import content_hash
from hyperprag.augment import read_cached
from hyperprag.data import DataError, Passage, load_questions, passages_of
from hyperprag.embeddings import build_source
from hyperprag.errors import HyperpragError
from hyperprag.hyper_encoder import RETIRED, HyperEncoder
from hyperprag.hyper_objectives import (answer_batch, answer_logits, answer_margin, delta_distance, distill_loss, lm_loss,
                                        passage_batch, qa_batches, rank_spread, sibling_first_tokens, sibling_margin,
                                        stacked_factors)
from hyperprag.inject import lora_hooks
from hyperprag.models import load_base_model
from hyperprag.prompts import build_prompt
from hyperprag.retrieval import retrieve
from hyperprag.store import AdapterStore

# Where JAX is installed beside torch (common on GPU images), something initialises it and it
# takes 75% of the GPU's memory up front; on an H200 that starved this run into out-of-memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

DEFAULTS = {
    "model": None, "embedding": "sentence", "data": [], "max_docs": None, "heldout_pct": 20, "heldout_first": 0,
    "rank": 2, "alpha": 32.0, "hidden": 256, "head_multiplier": None, "center": False, "copy_tokens": False, "read_rank": None, "context_kernel": None, "copy_dim": None, "tie_reads": False, "copy_keys": False, "row_bias": False, "b_gain": False, "init_from": None, "steps": 200, "docs_per_step": 4, "qa_per_doc": 2,
    "lr": 1e-3, "context_lr_scale": 1.0, "rank_lr_scale": 1.0, "weight_decay": 0.0, "warmup": 10, "seed": 0,
    "weights": {"lm": 1.0, "kl": 1.0, "recon": 0.0, "contrast": 0.0}, "contrast_margin": 0.5, "merge_k": 1, "recon_store": None, "recon_encoder_key": None,
    "augmented": [], "augment_cache": None, "passages": [], "passages_per_step": 0, "doc_words": 64,
    "retrieved": [], "retrieved_per_step": 0, "top_k": 3, "skip_first_questions": 0, "out": "runs/hypernet", "save_every": 50, "log_every": 10, "snapshot_every": None, "max_minutes": None,
    "first_token_weight": 1.0, "mixed_precision": None, "spread_target": 0.5,
}


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``3e-5`` (no dot) as a string; in a config, as in Python, it is a number.
    A key given twice is refused: YAML keeps the last silently, and a run would train on a value
    its reader of the config never saw."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, collections.abc.Hashable):
                continue  # the base class refuses it, with its line
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                    list("-+0123456789."))


def _yaml(text: str, where: str):
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        sys.exit(f"{where}{f':{mark.line + 1}' if mark else ''}: not valid YAML ({getattr(err, 'problem', None) or err})")


OBJECTIVES = ("lm", "kl", "recon", "contrast", "doc", "retrieved", "retrieved_contrast", "sibling", "spread")
AT_LEAST_ONE = ("steps", "docs_per_step", "qa_per_doc", "save_every", "log_every", "top_k", "rank", "hidden",
                "doc_words", "max_docs", "read_rank", "copy_dim", "snapshot_every")
AT_LEAST_ZERO = ("heldout_first", "passages_per_step", "retrieved_per_step", "skip_first_questions", "warmup")
# keys whose default is null (unset), and the type they take when set
NULLABLE = {"model": str, "max_docs": int, "head_multiplier": float, "read_rank": int, "context_kernel": int,
            "copy_dim": int, "init_from": str, "recon_store": str, "recon_encoder_key": str, "augment_cache": str,
            "snapshot_every": int, "max_minutes": float}
FILE_LISTS = ("data", "augmented", "passages", "retrieved")
EMBEDDINGS = ("sentence", "hidden", "tokens", "token-seq", "hidden-seq", "hidden-seq+words", "hidden-kv", "token-kv")


def _check_types(cfg: dict, path: str) -> None:
    """Each key takes its default's type (a number where the default is a float; anything where it
    is null), so a typo fails here and not as a TypeError after a minute of model loading."""
    kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    for key, default in DEFAULTS.items():
        value, kind = cfg[key], NULLABLE.get(key, type(default))
        if (default is None and value is None) or key == "mixed_precision":  # unset; mixed_precision: below
            continue
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            continue
        if kind is int and isinstance(value, float) and value.is_integer():  # 2e+1 reads as 20.0
            value = cfg[key] = int(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            sys.exit(f"{path}: {key} must be {kinds[kind]}, got {value!r}")
    for key in AT_LEAST_ONE:
        if cfg[key] is not None and cfg[key] < 1:
            sys.exit(f"{path}: {key} must be at least 1, got {cfg[key]}")
    for key in AT_LEAST_ZERO:
        if cfg[key] < 0:
            sys.exit(f"{path}: {key} must be at least 0, got {cfg[key]}")
    if not 0 <= cfg["heldout_pct"] < 100:
        sys.exit(f"{path}: heldout_pct must be a percentage from 0 to 99, got {cfg['heldout_pct']}")
    if cfg["head_multiplier"] is not None and not cfg["head_multiplier"] > 0:
        sys.exit(f"{path}: head_multiplier must be positive (or null: 1/hidden), got {cfg['head_multiplier']}")
    if cfg["embedding"].partition(":")[0] not in EMBEDDINGS:
        sys.exit(f"{path}: unknown embedding {cfg['embedding']!r}; use one of {', '.join(EMBEDDINGS)}")
    for key in (k for k, v in cfg.items() if isinstance(v, float) and not math.isfinite(v)):
        sys.exit(f"{path}: {key} must be a finite number, got {cfg[key]}")
    for key in ("lr", "alpha"):  # an alpha of 0 gives adapters that change nothing: nothing to learn
        if not cfg[key] > 0:
            sys.exit(f"{path}: {key} must be positive, got {cfg[key]}")
    for key in ("context_lr_scale", "rank_lr_scale", "weight_decay", "contrast_margin"):
        if cfg[key] < 0:
            sys.exit(f"{path}: {key} must be at least 0, got {cfg[key]}")
    if not 0 <= cfg["seed"] < 2 ** 32:
        sys.exit(f"{path}: seed must be from 0 to 2**32 - 1, got {cfg['seed']}")
    for name, weight in cfg["weights"].items():
        if name not in OBJECTIVES:
            sys.exit(f"{path}: unknown objective weights.{name}; the objectives are {', '.join(OBJECTIVES)}")
        if (not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight)
                or weight < 0):
            sys.exit(f"{path}: weights.{name} must be a finite number >= 0, got {weight!r}")
    if not any(cfg["weights"].values()):
        sys.exit(f"{path}: every objective's weight is 0 (or none is given): the run would train nothing; "
                 f"give weights, for example {{lm: 1.0}}")


def load_config(path: str, overrides: list[str]) -> dict:
    cfg = json.loads(json.dumps(DEFAULTS))
    try:
        loaded = _yaml(Path(path).read_text(encoding="utf-8"), path) or {}
    except OSError as err:
        sys.exit(f"{path}: cannot read the config ({err.strerror})")
    except UnicodeDecodeError as err:
        sys.exit(f"{path}: not UTF-8 text (byte {err.start})")
    if not isinstance(loaded, dict):
        sys.exit(f"{path}: a config is a mapping of keys to values, got {type(loaded).__name__}")
    unknown = set(loaded) - set(DEFAULTS)
    if unknown:
        sys.exit(f"{path}: unknown config keys {sorted(unknown)}")
    cfg.update(loaded)
    given = []
    for item in overrides:  # key=value, YAML-typed
        key, eq, value = item.partition("=")
        if not eq:
            sys.exit(f"override {item!r}: write key=value (for example steps=100)")
        if key not in DEFAULTS:
            hint = f" (a mapping is given whole: {key.partition('.')[0]}={{...}})" if key.partition(".")[0] in DEFAULTS else ""
            sys.exit(f"override {item!r}: unknown config key {key!r}{hint}")
        cfg[key] = _yaml(value, f"override {item}")
        given.append(item)
    # a value from the command line is named as such: the file is not where the mistake is
    where = f"{path} with {' '.join(given)}" if given else path
    _check_types(cfg, where)
    path = where
    if cfg["weights"].get("recon") and not (cfg["recon_store"] and cfg["recon_encoder_key"]):
        sys.exit(f"{path}: the recon objective reads exact adapters: give recon_store (the store directory) and "
                 f"recon_encoder_key (the exact encoder's key in it)")
    if cfg["weights"].get("recon") and not (Path(cfg["recon_store"]) / "index.sqlite").is_file():
        sys.exit(f"{path}: recon_store {cfg['recon_store']} is not an adapter store (no index.sqlite)")
    if cfg["context_kernel"] is not None and (cfg["context_kernel"] < 3 or cfg["context_kernel"] % 2 == 0):
        sys.exit(f"{path}: context_kernel must be odd and at least 3, got {cfg['context_kernel']}")
    needed = cfg["merge_k"] + bool(cfg["weights"].get("contrast"))  # contrast needs k documents besides the own
    if cfg["merge_k"] < 1 or cfg["docs_per_step"] < needed:
        sys.exit(f"{path}: merge_k must be >= 1 and docs_per_step >= {needed} (merge_k, plus 1 with contrast)")
    if cfg["mixed_precision"] is False:  # YAML reads a bare no as false
        cfg["mixed_precision"] = "no"
    if cfg["mixed_precision"] not in (None, "no", "bf16"):  # None: the launcher's --mixed_precision
        sys.exit(f"{path}: mixed_precision must be no or bf16, got {cfg['mixed_precision']!r}")
    if cfg["max_minutes"] is not None and not cfg["max_minutes"] > 0:
        sys.exit(f"{path}: max_minutes must be a positive number of minutes (or null: no time limit)")
    if not cfg["first_token_weight"] > 0:
        sys.exit(f"{path}: first_token_weight must be positive (1: every answer token counts the same)")
    if cfg["weights"].get("spread") and cfg["rank"] < 2:
        sys.exit(f"{path}: the spread objective parts an adapter's ranks; at rank 1 there is one: set rank >= 2 or drop it")
    if cfg["weights"].get("spread") and not 0 < cfg["spread_target"] <= math.sqrt((cfg["rank"] - 1) / cfg["rank"]):
        sys.exit(f"{path}: the spread objective asks each delta to lie spread_target (relative) from its best rank-1 "
                 f"approximation: at rank {cfg['rank']} that must be above 0 and at most "
                 f"{math.sqrt((cfg['rank'] - 1) / cfg['rank']):.3f}, got {cfg['spread_target']}")
    if cfg["augment_cache"]:  # `hyperprag augment` prints it under ~/.cache; a config may say ~
        cfg["augment_cache"] = str(Path(cfg["augment_cache"]).expanduser())
    if cfg["augmented"] and not (cfg["augment_cache"] and Path(cfg["augment_cache"]).is_dir()):
        sys.exit(f"{path}: augmented files need augment_cache, the directory `hyperprag augment` printed")
    if bool(cfg["passages"] or cfg["passages_per_step"]) != bool(cfg["weights"].get("doc")):
        sys.exit(f"{path}: the doc objective (weights.doc) trains on passages_per_step passages a step: "
                 f"give both, or neither (passages only add to what it draws from)")
    if bool(cfg["retrieved"] or cfg["retrieved_per_step"]) != bool(cfg["weights"].get("retrieved")):
        sys.exit(f"{path}: the retrieved objective (weights.retrieved) trains on retrieved_per_step questions of "
                 f"the retrieved files a step: give all three, or none")
    if cfg["weights"].get("retrieved_contrast") and not (cfg["weights"].get("retrieved") and cfg["retrieved_per_step"] >= 2):
        sys.exit(f"{path}: retrieved_contrast answers each retrieved question with another's passages: it needs the "
                 f"retrieved objective and retrieved_per_step >= 2")
    if cfg["init_from"] and not Path(cfg["init_from"]).is_dir():
        sys.exit(f"{path}: init_from {cfg['init_from']} does not exist ({RETIRED})")
    if cfg["center"] and cfg["docs_per_step"] < 2:
        sys.exit(f"{path}: center: true needs docs_per_step >= 2 (B is centred on the batch's mean)")
    for key in FILE_LISTS:  # last, so that a config's other mistakes are named whatever its files
        for f in cfg[key]:
            if not isinstance(f, str):
                sys.exit(f"{path}: {key} is a list of file paths, got {f!r}")
            if not Path(f).is_file():
                sys.exit(f"{path}: {key}: {f} is not a file")
    return cfg


def load_documents(files: list[str], heldout_pct: int, max_docs: int | None, heldout_first: int = 0):
    """(train, heldout): lists of (Passage, [(question, answer), ...]) split by document hash, plus
    the first ``heldout_first`` documents in file order (the ones the benchmarks evaluate on)."""
    docs: dict[str, tuple[Passage, list]] = {}
    for f in files:
        for ex in load_questions(f):
            if len(ex.passages) == 1:
                p = ex.passages[0]
                docs.setdefault(content_hash(p.text), (p, []))[1].append((ex.question, ex.answers[0]))
    train, held = [], []
    for n, (h, item) in enumerate(docs.items()):
        (held if n < heldout_first or int(h[:8], 16) % 100 < heldout_pct else train).append(item)
    return train[:max_docs], held


def corpus_passages(files: list[str], skip_first: int, exclude: set[str]) -> list[Passage]:
    """The distinct passages of ``files`` less those in ``exclude`` and the evaluated questions'."""
    docs = {content_hash(p.text): p for f in files for p in passages_of(f, skip_first)}
    return [p for h, p in docs.items() if h not in exclude]


def augmented_documents(files: list[str], cache: str, skip_first: int, exclude: set[str]):
    """(Passage, QA pairs) for the passages of ``files`` with a cached augmentation: generated
    questions stand in for human ones, so any corpus can train the hypernetwork."""
    docs = []
    for p in corpus_passages(files, skip_first, exclude):
        aug = read_cached(cache, content_hash(p.text))
        if aug is not None and aug.qa:
            docs.append((p, list(aug.qa)))
    return docs


def retrieved_questions(files: list[str], skip_first: int, top_k: int) -> list[tuple[list[Passage], str, str]]:
    """(top passages, question, answer) for the questions past each file's first ``skip_first``,
    retrieved as the benchmark retrieves them; a question whose top passages include one of the
    evaluated questions' is left out, so no benchmark passage is trained on."""
    out = []
    for f in files:
        examples = load_questions(f)
        evaluated = {content_hash(p.text) for ex in examples[:skip_first] for p in ex.passages}
        for ex in examples[skip_first:]:
            top = retrieve(ex, top_k) if ex.passages else []
            if top and not any(content_hash(p.text) in evaluated for p in top):
                out.append((top, ex.question, ex.answers[0]))
    return out


def drop_log_after(path: Path, step: int) -> None:
    """A resumed run redoes the steps after its last saved state; their log lines go, so that each
    step is logged once."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line the kill cut short, and nothing after it
            break
        if record["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def warm_start(encoder: HyperEncoder, ckpt: str, model, tokenizer, source) -> None:
    """Start from a trained checkpoint of the same design, or from a full-read-map one when this run
    has ``read_rank`` (its maps then start as their truncated SVD: a faster network that keeps what
    the full one learned), or from one without the token context when this run adds it (the context
    starts at zero, so the network starts as the checkpoint), or from an untied one when this run
    ties its reads (each query starts as the mean of the six it replaces), or from one without A's
    row biases when this run adds them. Those start as a LoRA's A draw less its mean over the rows:
    zero would leave the checkpoint's near-parallel rows as they are, and a mean of zero keeps the
    sum its parallel rows made, so v8's deltas move by 3% (benchmarks/adapter_rank.md). B's read
    gains, when this run adds them, start at 1, the checkpoint's B exactly: drawn apart they moved
    v8's deltas by 24% (with the row biases). Trained from there, v8's ranks did not part: both got
    the same gradient (benchmarks/adapter_rank.md). Anything else differing is refused, naming both."""
    start = HyperEncoder.from_pretrained(ckpt, model, tokenizer, source=source).hypernet
    mine, theirs = encoder.hypernet.config.to_dict(), start.config.to_dict()
    adds_context = theirs["context_kernel"] is None
    ties = mine["tie_reads"] and not theirs["tie_reads"]
    adds_row_bias = mine["row_bias"] and not theirs["row_bias"]
    adds_b_gain = mine["b_gain"] and not theirs["b_gain"]
    differ = sorted(k for k in mine if k != "read_rank" and mine[k] != theirs[k]
                    and not (k == "context_kernel" and adds_context) and not (k == "tie_reads" and ties)
                    and not (k == "row_bias" and adds_row_bias) and not (k == "b_gain" and adds_b_gain))
    if differ:
        sys.exit(f"init_from {ckpt}: its hypernetwork differs from this config's in {differ}: "
                 + ", ".join(f"{k} {theirs[k]} there, {mine[k]} here" for k in differ))
    state = start.state_dict()
    if adds_context and mine["context_kernel"] is not None:
        state["context.weight"] = encoder.hypernet.context.weight.detach().clone()  # zeros
    if ties:
        state = start.tied_state(state, mine["rank"])
    if adds_row_bias:  # this run's own draw, less its mean over the rows (see the docstring)
        state |= {f"a_row_bias.{role}": (p - p.mean(1, keepdim=True)).detach()
                  for role, p in encoder.hypernet.a_row_bias.items()}
    if adds_b_gain:  # all 1: the checkpoint's B as it was (see the docstring)
        state |= {f"b_read_gain.{role}": torch.ones_like(p) for role, p in encoder.hypernet.b_read_gain.items()}
    if mine["read_rank"] == theirs["read_rank"]:
        encoder.hypernet.load_state_dict(state)
    elif theirs["read_rank"] is None:
        encoder.hypernet.load_factored(state)
    else:
        sys.exit(f"init_from {ckpt}: read_rank {theirs['read_rank']} there, {mine['read_rank']} here; only "
                 f"a full-map checkpoint (read_rank null) can start a bottlenecked run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML config (see training/configs/)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=10 out=runs/x")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg["mixed_precision"])
    set_seed(cfg["seed"])
    out = Path(cfg["out"])
    log = accelerator.print

    # --- model, embeddings, data -------------------------------------------------------------
    model, tokenizer = load_base_model(cfg["model"], device=accelerator.device)
    for p in model.parameters():
        p.requires_grad_(False)
    source = build_source(cfg["embedding"], model, tokenizer)
    train_docs, heldout = load_documents(cfg["data"], cfg["heldout_pct"], cfg["max_docs"], cfg["heldout_first"])
    known = {content_hash(d.text) for d, _ in train_docs + heldout}
    if cfg["augmented"]:
        extra = augmented_documents(cfg["augmented"], cfg["augment_cache"], cfg["skip_first_questions"], known)
        log(f"augmented: {len(extra)} passages with generated QA pairs")
        train_docs += extra
        known |= {content_hash(d.text) for d, _ in extra}
    if not train_docs:
        sys.exit("no training documents: check 'data' and 'augmented' in the config")
    # The doc objective's pool: every training document, then the question-free passages.
    pool = [d for d, _ in train_docs] + corpus_passages(cfg["passages"], cfg["skip_first_questions"], known)
    if cfg["passages"]:
        log(f"passages: {len(pool) - len(train_docs)} without questions, for the doc objective")
    # The retrieved questions' passages join the pool and are kept as pool rows (embedded like the rest).
    # A question whose passages include a held-aside document is left out: training on its
    # passages would break the promise of heldout_hashes.json.
    retrieved, held = [], {content_hash(d.text) for d, _ in heldout}
    pool_row = {content_hash(d.text): i for i, d in enumerate(pool)}
    for top, question, answer in retrieved_questions(cfg["retrieved"], cfg["skip_first_questions"], cfg["top_k"]):
        if any(content_hash(p.text) in held for p in top):
            continue
        for p in top:
            if pool_row.setdefault(content_hash(p.text), len(pool)) == len(pool):
                pool.append(p)
        retrieved.append(([pool_row[content_hash(p.text)] for p in top], question, answer))
    if cfg["retrieved"]:
        log(f"retrieved: {len(retrieved)} questions with their top {cfg['top_k']} passages")
    log(f"processes: {accelerator.num_processes} ({accelerator.distributed_type}) on {accelerator.device}, "
        f"mixed precision: {accelerator.mixed_precision}")
    log(f"documents: {len(train_docs)} train, {len(heldout)} held aside; embedding {source.id}")
    # Pooled embeddings of the whole pool are computed once (every source batches internally);
    # per-token ones would not fit in memory, and are looked up for each batch instead.
    embeddings = None if source.per_token else source.embed([d.text for d in pool])

    def embed(rows: list[int]) -> torch.Tensor:
        """Embeddings of these pool rows (the training documents come first)."""
        out = embeddings[rows] if embeddings is not None else source.embed([pool[i].text for i in rows])
        return out.to(accelerator.device)

    # None: 1/hidden, which trains the heads at a LoRA's pace (see HyperNetConfig.head_multiplier)
    head_mult = cfg["head_multiplier"] if cfg["head_multiplier"] is not None else 1.0 / cfg["hidden"]
    try:  # options that only make sense together (copy_dim needs copy_tokens, ...) are checked here
        encoder = HyperEncoder.create(model, source, rank=cfg["rank"], alpha=cfg["alpha"], hidden=cfg["hidden"],
                                      head_multiplier=head_mult, center=cfg["center"], copy_tokens=cfg["copy_tokens"],
                                      read_rank=cfg["read_rank"], context_kernel=cfg["context_kernel"],
                                      copy_dim=cfg["copy_dim"], tie_reads=cfg["tie_reads"],
                                      copy_keys=cfg["copy_keys"], row_bias=cfg["row_bias"], b_gain=cfg["b_gain"])
    except ValueError as err:
        sys.exit(f"{args.config}: {err}")
    if cfg["init_from"]:
        warm_start(encoder, cfg["init_from"], model, tokenizer, source)
        log(f"initialised from {cfg['init_from']}")
    scaling = encoder.hypernet.config.scaling
    log(f"hypernetwork: {encoder.hypernet.num_parameters():,} parameters")
    recon_store = None
    if cfg["weights"].get("recon"):
        recon_store = AdapterStore(cfg["recon_store"])
        held = {r.doc_hash for r in recon_store.records()
                if r.encoder == cfg["recon_encoder_key"] and r.base_model == encoder.base_model}
        covered = sum(content_hash(d.text) in held for d, _ in train_docs)
        if not covered:  # else recon would be skipped every step, silently
            sys.exit(f"{args.config}: recon_store {cfg['recon_store']} holds no adapter of encoder "
                     f"{cfg['recon_encoder_key']!r} for base model {encoder.base_model!r} for any of the "
                     f"{len(train_docs)} training documents")
        log(f"recon: exact adapters for {covered} of {len(train_docs)} training documents")

    # The token context starts at zero and added to a warm-started network it has a short run to
    # grow: ``context_lr_scale`` lets its weights move faster than the rest. ``rank_lr_scale`` does
    # the same for A's row biases and B's read gains: Adam moves an entry about lr a step, so at
    # 1e-4 a gain of order 1 moved at most 0.003 in 75 steps of a warm start, and B's columns stayed
    # parallel (benchmarks/adapter_rank.md).
    # One group per kind that the network has, whatever the scales: a resumed run may change them.
    kinds = {"rest": 1.0, "context": cfg["context_lr_scale"], "rank": cfg["rank_lr_scale"]}
    params: dict[str, list[torch.nn.Parameter]] = {kind: [] for kind in kinds}
    for n, p in encoder.hypernet.named_parameters():
        kind = "context" if n.startswith("context.") else "rank" if n.startswith(("a_row_bias.", "b_read_gain.")) else "rest"
        params[kind].append(p)
    groups = [{"params": params[kind], "lr_scale": scale} for kind, scale in kinds.items() if params[kind]]
    optim = torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    hypernet, optim = accelerator.prepare(encoder.hypernet, optim)

    # --- resume ------------------------------------------------------------------------------
    state_dir, step, spent = out / "state", 0, 0.0  # spent: seconds trained before this process
    previous = out / "state.old"  # a kill between save_state's two renames leaves the last good state here
    if accelerator.is_main_process and not (state_dir / "step.json").exists() and (previous / "step.json").exists():
        shutil.rmtree(state_dir, ignore_errors=True)
        previous.rename(state_dir)
    accelerator.wait_for_everyone()
    if (state_dir / "step.json").exists():
        try:
            saved = json.loads((state_dir / "step.json").read_text())
            step, spent = int(saved["step"]), float(saved.get("seconds", 0.0))
            accelerator.load_state(str(state_dir))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # changed from outside the run
            raise HyperpragError(f"{state_dir} is damaged ({type(err).__name__}: {err}); delete it to start the run "
                                 f"again, or put back a whole copy") from None
        log(f"resumed from step {step}")
        # load_state brings back the saved param groups' settings; lr is set every step, and the
        # rest must be this launch's too, as its config says
        for group, wanted in zip(optim.param_groups, groups):
            group["lr_scale"], group["weight_decay"] = wanted["lr_scale"], cfg["weight_decay"]
        changed = [f"{k} {saved['config'].get(k)!r} -> {cfg[k]!r}" for k in cfg
                   if "config" in saved and saved["config"].get(k) != cfg[k]]
        if changed:
            log("resumed with settings changed since the run's state was saved (in effect from here): "
                + "; ".join(changed))
    if accelerator.is_main_process:  # also with no state: a run killed before its first save logged steps
        drop_log_after(out / "log.jsonl", step)
    budget = cfg["max_minutes"] * 60 if cfg["max_minutes"] else None

    def progress() -> float:
        """Share of the run done, by steps or by the time budget if that is further along. The main
        process's clock decides, so every process stops at the same step."""
        done = step / cfg["steps"]
        if budget:
            clock = torch.tensor([(spent + time.time() - t_start) / budget], device=accelerator.device)
            done = max(done, broadcast(clock).item())
        return done

    def set_lr(done: float) -> float:
        lr = cfg["lr"] * min(1.0, (step + 1) / max(cfg["warmup"], 1)) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        for group in optim.param_groups:
            group["lr"] = lr * group["lr_scale"]
        return lr

    def save_encoder(path: Path) -> None:
        """A loadable checkpoint of the current weights; training goes on with the live copy. It
        carries its config and held-aside list, so that a benchmark can tell which of its passages
        the checkpoint may have been trained on wherever the checkpoint is copied."""
        if accelerator.is_main_process:
            snapshot = HyperEncoder(copy.deepcopy(accelerator.unwrap_model(hypernet)).eval(), source,
                                    encoder.base_model, encoder.targets)
            if cfg["center"]:
                snapshot.hypernet.set_center(embed(list(range(s, min(s + 256, len(pool)))))
                                             for s in range(0, len(pool), 256))
            path.mkdir(parents=True, exist_ok=True)
            (path / "training_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            (path / "step.json").write_text(json.dumps({"step": step}))  # final/ outlives a resumed run's state
            for name in ("heldout_hashes.json", "augmented_hashes.json"):
                if (out / name).exists():
                    shutil.copy(out / name, path / name)
            snapshot.save_pretrained(path)  # config.json last: it marks a whole checkpoint
            log(f"saved {path}")

    def save_state() -> None:
        """The resume point is replaced only once the new one is whole, step.json included."""
        tmp = out / "state.tmp"
        if accelerator.is_main_process:  # what a save cut short left behind
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "step.json").write_text(json.dumps({"step": step, "seconds": spent + time.time() - t_start,
                                                       "config": cfg}))
            shutil.rmtree(previous, ignore_errors=True)
            if state_dir.exists():
                state_dir.rename(previous)
            tmp.rename(state_dir)
            shutil.rmtree(previous, ignore_errors=True)
        accelerator.wait_for_everyone()

    # Every process draws its own documents: the seed includes the rank and the step, so a resumed
    # run continues the same sequence and processes never train on the same batch.
    weights = cfg["weights"]
    log_path = out / "log.jsonl"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "heldout_hashes.json").write_text(json.dumps([content_hash(d.text) for d, _ in heldout]))
        if cfg["augmented"]:  # the cache grows while `hyperprag augment` runs: record what this run saw
            (out / "augmented_hashes.json").write_text(json.dumps([content_hash(d.text) for d, _ in extra]))
    hypernet.train()
    bar = tqdm(total=cfg["steps"], initial=step, desc="train hypernet", disable=not accelerator.is_main_process)
    t_start = time.time()
    # loss sums since the last log line and how many steps computed each (recon skips a step
    # whose documents have no stored adapter): the log shows each one's own mean
    running: dict[str, float] = {}
    counted: dict[str, int] = {}
    done = progress()
    while done < 1.0:
        lr = set_lr(done)
        rng = random.Random(hash((cfg["seed"], accelerator.process_index, step)))
        idx = rng.sample(range(len(train_docs)), min(cfg["docs_per_step"], len(train_docs)))
        # Rows past the batch's documents: passages drawn for the doc objective alone.
        drawn = rng.sample(range(len(pool)), min(cfg["passages_per_step"], len(pool)))
        # Then the retrieved questions' passages, each question's set padded to top_k with -1.
        picked = [retrieved[i] for i in rng.sample(range(len(retrieved)), min(cfg["retrieved_per_step"], len(retrieved)))]
        ret_rows = list(dict.fromkeys(r for top, _, _ in picked for r in top))
        at = {r: len(idx) + len(drawn) + n for n, r in enumerate(ret_rows)}
        ret_sets = torch.tensor([[at[r] for r in top] + [-1] * (cfg["top_k"] - len(top)) for top, _, _ in picked],
                                dtype=torch.long, device=accelerator.device)
        # bf16 autocast (mixed_precision: bf16) covers the frozen base model too, whose passes are
        # most of a step; the weights stay fp32.
        with accelerator.autocast():
            out_f = hypernet(embed(idx + drawn + ret_rows))
            rows, docs, questions, answers, siblings = [], [], [], [], []
            for r, i in enumerate(idx):
                doc, qa = train_docs[i]
                for q, a in rng.sample(qa, min(cfg["qa_per_doc"], len(qa))):
                    rows.append(r)
                    docs.append(doc)
                    questions.append(q)
                    answers.append(a)
                    siblings.append([o for _, o in qa])  # its own answer drops out by first token
            student, teacher = qa_batches(tokenizer, docs, questions, answers)
            # Each question is answered with the sum of its own document's adapter and those of k - 1
            # others of the batch (k drawn in 1..merge_k). Not the mean that retrieval uses (the
            # `retrieved` objective trains that): a part every document shares is added k times
            # here, so it cannot be what answers the question.
            k = rng.randint(1, min(cfg["merge_k"], len(idx)))
            others = [rng.sample([j for j in range(len(idx)) if j != r], len(idx) - 1) for r in rows]
            own_sets = torch.tensor([[r, *o[: k - 1]] for r, o in zip(rows, others)], device=accelerator.device)
            if any(weights.get(w) for w in ("lm", "kl", "contrast", "sibling")):  # a doc-only run needs no answers
                with lora_hooks(model, stacked_factors(out_f, encoder.targets, own_sets), scaling=scaling):
                    s_logits = answer_logits(model, student)
            losses, scored = {}, {"lm": student}  # scored: each answer loss's batch, for the paired log
            if weights.get("lm"):
                losses["lm"] = lm_loss(s_logits, student, cfg["first_token_weight"])
            if weights.get("sibling"):
                sib = sibling_first_tokens(tokenizer, answers, siblings, rng)
                losses["sibling"] = sibling_margin(s_logits, student, sib, cfg["contrast_margin"])
            if drawn:
                own_only = torch.arange(len(idx), len(idx) + len(drawn), device=accelerator.device).unsqueeze(1)
                scored["doc"] = passage_batch(tokenizer, [pool[i] for i in drawn], cfg["doc_words"])
                with lora_hooks(model, stacked_factors(out_f, encoder.targets, own_only), scaling=scaling):
                    losses["doc"] = lm_loss(answer_logits(model, scored["doc"]), scored["doc"])
            if picked:
                scored["retrieved"] = answer_batch(tokenizer, [build_prompt(q) for _, q, _ in picked], [a for *_, a in picked])
                with lora_hooks(model, stacked_factors(out_f, encoder.targets, ret_sets, HyperEncoder.merge), scaling=scaling):
                    r_logits = answer_logits(model, scored["retrieved"])
                losses["retrieved"] = lm_loss(r_logits, scored["retrieved"], cfg["first_token_weight"])
                if weights.get("retrieved_contrast") and len(picked) > 1:
                    # Each question's wrong set is the next drawn question's passages: an answer form
                    # that any passage teaches (yes/no on 2Wiki) cannot win the margin.
                    with lora_hooks(model, stacked_factors(out_f, encoder.targets, ret_sets.roll(1, 0), HyperEncoder.merge),
                                    scaling=scaling):
                        wrong = answer_logits(model, scored["retrieved"])
                    losses["retrieved_contrast"] = answer_margin(r_logits, wrong, scored["retrieved"], cfg["contrast_margin"])
            if weights.get("kl"):
                with torch.no_grad():
                    t_logits = answer_logits(model, teacher)
                losses["kl"] = distill_loss(s_logits, t_logits)
            if weights.get("contrast") and len(idx) > k:
                # Each question is to be answered better with its own document's adapter (in its
                # set of k) than with k other documents'.
                wrong_sets = torch.tensor([o[:k] for o in others], device=accelerator.device)
                with lora_hooks(model, stacked_factors(out_f, encoder.targets, wrong_sets), scaling=scaling):
                    wrong = answer_logits(model, student)
                losses["contrast"] = answer_margin(s_logits, wrong, student, cfg["contrast_margin"])
            if weights.get("spread"):
                losses["spread"] = rank_spread(out_f, cfg["spread_target"])
            if recon_store is not None:
                dists = []
                for r, i in enumerate(idx):
                    exact = recon_store.get(content_hash(train_docs[i][0].text), cfg["recon_encoder_key"],
                                            encoder.base_model)
                    if exact is None:
                        continue
                    for t in encoder.targets:
                        a2, b2 = (x.to(accelerator.device) for x in exact.factors[t.name])
                        dists.append(delta_distance(out_f[t.role][0][r, t.layer], out_f[t.role][1][r, t.layer],
                                                    scaling, a2, b2, exact.scaling))
                if dists:
                    losses["recon"] = torch.stack(dists).mean()
            loss = sum(weights[k] * v for k, v in losses.items())
            if not losses:  # nothing to score this step (recon, and no stored adapter of its documents):
                # a zero loss through every output keeps the step, and several processes, in order
                loss = sum(t.sum() for a, b in out_f.values() for t in (a, b)) * 0.0
        for k, v in [("loss", loss), *losses.items()]:
            running[k] = running.get(k, 0.0) + v.item()
            counted[k] = counted.get(k, 0) + 1
        paired = {}
        if (step + 1) % cfg["log_every"] == 0:
            # The same batch's losses without any adapter: is the generated adapter helping? Under
            # the same autocast as the step's own, so the difference is the adapter's, not bf16's.
            with torch.no_grad(), accelerator.autocast():
                for name, b in scored.items():
                    if name in losses:
                        fw = cfg["first_token_weight"] if name in ("lm", "retrieved") else 1.0  # weighted as trained
                        paired |= {f"{name}_this_step": losses[name].item(),
                                   f"{name}_no_adapter_this_step": lm_loss(answer_logits(model, b), b, fw).item()}
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(hypernet.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        done = progress()
        last = done >= 1.0
        if step % cfg["log_every"] == 0 or last:
            record = {"step": step, **{k: v / counted[k] for k, v in running.items()}, **paired,
                      "lr": lr, "seconds": spent + time.time() - t_start}
            running, counted = {}, {}
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k == "loss" or k in weights})
            if accelerator.is_main_process:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
        # the snapshot first: a kill between the two would resume after this step and never write it
        if cfg["snapshot_every"] and step % cfg["snapshot_every"] == 0 and not last:
            save_encoder(out / f"step-{step}")
        if step % cfg["save_every"] == 0 or last:
            save_state()
    bar.close()
    save_encoder(out / "final")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    try:
        main()
    except (HyperpragError, DataError) as err:  # a data file's file:line, a model that will not load: one line
        sys.exit(str(err))
    except OSError as err:  # an out path through a file, a full disk: what and where, in one line
        sys.exit(f"train_hypernet: {err.strerror or err}{f': {err.filename}' if err.filename else ''}")
