"""``hyperprag bench``: in-context, trained and generated adapters on the same questions.

Every mode answers the same questions with the same retrieved passages; cost, latency, throughput
and specificity are measured in the same process, each timing a median over repeats, and timings
that are compared run interleaved. Nothing finished is ever redone: adapters live in the store,
answers are appended per batch to ``OUT/work/answers-*.jsonl`` and timings kept in
``OUT/work/*.json``, each file named by a hash of everything its result depends on, so a killed
run resumes and a run with other settings never reuses a stale piece.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .evaluate import Mode
    from .hyper_encoder import HyperEncoder

from .adapter import DocAdapter, content_hash
from .data import Passage, QAExample, passages_of
from .diagnostics import mean_off_diagonal, similarity_matrix, specificity, wrong_document
from .encoder import DocumentEncoder
from .evaluate import MODES, evaluate, get_mode, merged_adapters, summarize
from .files import write_text_atomic
from .generation import generate_completions
from .inject import inject
from .merge import merge_adapters
from .metrics import best_em_f1, bootstrap_share, paired_bootstrap
from .models import model_id
from .prompts import build_prompt
from .store import AdapterStore

ALL_MODES = tuple(MODES)


@dataclass
class Dataset:
    """One question file: its questions and, per question, the passages every mode uses."""
    name: str
    path: str
    examples: list[QAExample]
    retrieved: list[list[Passage]]

    @property
    def passages(self) -> list[Passage]:
        """Distinct retrieved passages, in order of first use."""
        return list({content_hash(p.text): p for ps in self.retrieved for p in ps}.values())


@dataclass
class BenchSettings:
    modes: Sequence[str] = ALL_MODES
    batch_size: int = 8
    max_new_tokens: int = 32
    merge: str | None = None     # None: each encoder's own (DocumentEncoder.merge)
    cost_docs: int = 2           # documents the exact encoder is timed on, from a cold augmentation cache
    repeats: int = 3             # timing repeats (medians)
    latency_queries: int = 8
    throughput_queries: int = 16
    similarity_docs: int = 20
    progress: bool = True
    command: str | None = None                   # recorded in results.json and the report
    options: dict = field(default_factory=dict)  # the command line's options, recorded likewise


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def questions_fingerprint(examples: Sequence[QAExample], retrieved: Sequence[Sequence[Passage]]) -> list:
    """What saved answers depend on besides the model and mode: each question as asked and scored,
    and its passages with their titles, which the prompt shows. Ids alone would let an edited
    question or a corrected gold answer reuse answers written, or scored, for the old one."""
    return [[ex.id, ex.question, list(ex.answers), [[p.title, content_hash(p.text)] for p in ps]]
            for ex, ps in zip(examples, retrieved, strict=True)]


class WorkDir:
    """Finished pieces of a bench run, one file each, named by what they depend on."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, key: str, compute: Callable[[], dict]) -> dict:
        path = self.root / f"{name}-{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        value = compute()
        write_text_atomic(path, json.dumps(value))
        return value

    def answers_path(self, name: str, key: str) -> Path:
        return self.root / f"answers-{name}-{key}.jsonl"


def _read_records(path: Path) -> list[dict]:
    """Answers written so far; a line cut by a kill is dropped (that question is answered again)."""
    records = []
    if path.exists():
        for line in path.read_bytes().splitlines():  # bytes: a cut may fall inside a character
            try:
                records.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                break
    return records


def answer_all(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ds: Dataset, mode: str,
               adapters: Sequence[DocAdapter] | None, path: Path, settings: BenchSettings, label: str) -> list[dict]:
    """Answer every question of ``ds`` in ``mode``, appending each batch's answers to ``path`` so a
    killed run continues after the last finished batch."""
    records = _read_records(path)
    if len(records) > len(ds.examples):
        raise ValueError(f"{path} holds more answers than there are questions; delete it")
    for r in records:  # scored again: answers kept from before a fix to the metric get today's score
        r["em"], r["f1"] = best_em_f1(r["prediction"], r["answers"])
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not path.exists() or path.read_bytes() != text.encode("utf-8"):  # drop a cut last line, atomically
        write_text_atomic(path, text)
    bs = settings.batch_size
    bar = tqdm(total=len(ds.examples), initial=len(records), desc=f"{ds.name} {label}", unit="q",
               disable=not settings.progress or len(records) == len(ds.examples))
    for start in range(len(records), len(ds.examples), bs):
        end = start + bs
        r = evaluate(model, tokenizer, ds.examples[start:end], mode, ds.retrieved[start:end], bs,
                     settings.max_new_tokens, progress=False,
                     adapters=adapters[start:end] if adapters is not None else None)
        with path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in r["predictions"])
            f.flush()
            os.fsync(f.fileno())
        records += r["predictions"]
        bar.update(len(r["predictions"]))
    bar.close()
    return records


def run_bench(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, datasets: Sequence[Dataset],
              encoders: dict[str, DocumentEncoder], store: AdapterStore, out: Path, settings: BenchSettings,
              hyper_checkpoint: Path | None = None) -> dict:
    """Run everything, write ``results.json``, ``report.md`` and the plots into ``out``; return the results."""
    from .plots import write_plots
    from .report import write_report

    out.mkdir(parents=True, exist_ok=True)
    work = WorkDir(out / "work")
    modes = [get_mode(m) for m in settings.modes]
    base = model_id(model)
    merges = {name: settings.merge or enc.merge for name, enc in encoders.items()}
    results: dict = {
        "command": settings.command,
        "settings": {k: v for k, v in vars(settings).items() if k not in ("command", "options", "progress")},
        "options": settings.options,
        "versions": _versions(),
        "base_model": base,
        "encoders": {n: e.key for n, e in encoders.items()},
        "merge": merges,
        "hyper_checkpoint": str(hyper_checkpoint) if hyper_checkpoint else None,
        "datasets": {},
    }
    merged: dict[str, dict[str, list[DocAdapter]]] = {}
    for ds in datasets:
        ds_key = fingerprint(base, ds.path, questions_fingerprint(ds.examples, ds.retrieved))
        merged[ds.name] = {name: merged_adapters(ds.retrieved, store, enc, merges[name], settings.progress)
                           for name, enc in encoders.items()}
        # Titles: another document of the same subject keeps more of the lift (topic_specificity.md),
        # so the wrong-document ablation is harder when the passages span few subjects.
        entry = {"path": ds.path, "n_questions": len(ds.examples), "n_passages": len(ds.passages),
                 "n_titles": len({p.title for p in ds.passages}), "modes": {}}
        answers = {}
        for mode in modes:
            enc_key = encoders[mode.encoder].key if mode.adapters else None
            # modes without adapters merge nothing; "sum" keeps their answers' keys from before per-encoder merges
            key = fingerprint(ds_key, mode.name, enc_key, merges.get(mode.encoder, "sum"), settings.max_new_tokens)
            ads = merged[ds.name][mode.encoder] if mode.adapters else None
            answers[mode.name] = answer_all(model, tokenizer, ds, mode.name, ads,
                                            work.answers_path(f"{ds.name}-{mode.name}", key), settings, mode.name)
            entry["modes"][mode.name] = summarize(answers[mode.name])
        entry["intervals"] = _intervals(answers)
        entry["wrong_document"], wrong_answers = _wrong_document(model, tokenizer, ds, ds_key, entry, answers,
                                                                 merged[ds.name], encoders, merges, work, settings)
        entry["similarity"] = _similarity(ds, encoders, store, settings.similarity_docs)
        if hyper_checkpoint is not None:
            entry["hyper_trained_on"] = training_overlap(hyper_checkpoint, ds)
        # the ablation's answers too ("hyper-wrongdoc"), so every figure can be recomputed from this file
        entry["predictions"] = {m: [{"id": r["id"], "prediction": r["prediction"], "f1": r["f1"]} for r in rs]
                                for m, rs in (answers | wrong_answers).items()}
        results["datasets"][ds.name] = entry

    first = datasets[0]  # cost, latency and throughput are measured on the first data file
    first_merged = merged[first.name]
    results["timing_dataset"] = first.name
    timing_key = fingerprint(base, results["encoders"], results["settings"],
                             [content_hash(p.text) for p in first.passages[: max(settings.cost_docs, 1)]])
    results["cost_seconds_per_doc"] = work.stage(
        "cost", timing_key, lambda: encoder_cost(model, tokenizer, encoders, first.passages, settings))
    results["bytes_per_doc"] = {n: statistics.median(r.bytes for r in store.records()
                                                     if r.encoder == e.key and r.base_model == e.base_model)
                                for n, e in encoders.items()}
    # latency and throughput are measured on the first questions, with their passages
    n_queries = max(settings.latency_queries, settings.throughput_queries)
    query_key = fingerprint(timing_key, questions_fingerprint(first.examples[:n_queries], first.retrieved[:n_queries]))
    results["latency_seconds"] = work.stage(
        "latency", query_key, lambda: query_latency(model, tokenizer, first, first_merged, encoders, modes,
                                                     merges.get("hyper"), settings))
    results["throughput_q_per_s"] = work.stage(
        "throughput", query_key, lambda: batch_throughput(model, tokenizer, first, first_merged, settings))
    write_text_atomic(out / "results.json", json.dumps(undefined_as_null(results), indent=1, ensure_ascii=False,
                                                       allow_nan=False))
    plots = write_plots(results, out)
    write_report(results, out, plots)
    return results


def undefined_as_null(value):
    """``value`` with every NaN or infinity as None. A share with no gap or lift to divide by is NaN
    in memory; written as is, ``json`` emits a bare ``NaN`` that is not JSON and that other readers
    refuse, so results.json says ``null`` there, and any other non-finite figure fails the write."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: undefined_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [undefined_as_null(v) for v in value]
    return value


def _f1s(records: list[dict]) -> list[float]:
    return [r["f1"] for r in records]


def _intervals(answers: dict[str, list[dict]]) -> dict:
    """95% bootstrap intervals of the figures the bar is stated in: the closed-to-rag gap, the share
    of it each adapter mode closes, and generated minus trained F1. Every mode answers the same
    questions in the same order, so the lists pair up by position."""
    f1 = {m: _f1s(rs) for m, rs in answers.items()}
    out = {}
    if {"closed", "rag"} <= f1.keys():
        whole = [r - c for r, c in zip(f1["rag"], f1["closed"])]
        out["gap"] = list(paired_bootstrap(f1["rag"], f1["closed"]))  # a share of a gap not above zero is no figure
        out["gap_share"] = {m: list(bootstrap_share([x - c for x, c in zip(f1[m], f1["closed"])], whole))
                            for m in ("prag", "hyper") if m in f1}
    if {"prag", "hyper"} <= f1.keys():
        out["hyper_minus_prag"] = list(paired_bootstrap(f1["hyper"], f1["prag"]))
    return out


def _wrong_document(model, tokenizer, ds, ds_key, entry, answers, merged, encoders, merges, work,
                    settings) -> tuple[dict, dict[str, list[dict]]]:
    """Parametric modes answered with another document's adapters: how much of the lift remains.

    The lift of an adapter-only mode is over closed-book; that of a -combine mode over rag (the
    same passages in the prompt, no adapter), so an adapter that only teaches answer format (short
    answers, no copied passage header) shows up as a lift that the wrong document keeps. Returns the
    figures per mode and the answers per ``MODE-wrongdoc``."""
    out, records = {}, {}
    for name in ("prag", "hyper", "prag-combine", "hyper-combine"):
        mode = get_mode(name)
        baseline = "rag" if mode.passages_in_prompt else "closed"
        if name not in entry["modes"] or baseline not in entry["modes"]:
            continue
        try:
            wrong = wrong_document(merged[mode.encoder])
        except ValueError:  # some question's documents are in every retrieval: no other adapter to give it
            continue
        key = fingerprint(ds_key, name, "wrong-document", encoders[mode.encoder].key, merges[mode.encoder],
                          settings.max_new_tokens, [w.doc_hash for w in wrong])
        recs = answer_all(model, tokenizer, ds, name, wrong, work.answers_path(f"{ds.name}-{name}-wrongdoc", key),
                          settings, f"{name} (wrong document)")
        s = summarize(recs)
        out[name] = {"em": s["em"], "f1": s["f1"], "baseline": baseline} | specificity(
            entry["modes"][baseline]["f1"], entry["modes"][name]["f1"], s["f1"])
        right, base = _f1s(answers[name]), _f1s(answers[baseline])
        _, lo, hi = bootstrap_share([r - w for r, w in zip(right, _f1s(recs))], [r - b for r, b in zip(right, base)])
        out[name]["share_of_lift_lost_interval"] = [lo, hi]
        out[name]["lift_interval"] = list(paired_bootstrap(right, base)[1:])
        records[f"{name}-wrongdoc"] = recs
    return out, records


def _similarity(ds: Dataset, encoders, store: AdapterStore, n_docs: int) -> dict:
    """Pairwise cosine of the per-document deltas (not merged) of the first ``n_docs`` passages.

    The cosine depends on the passages as much as on the encoder: v8's generated deltas read 0.43
    on 20 paragraphs of one SQuAD article and -0.001 on 40 unrelated HotpotQA passages
    (benchmarks/topic_specificity.md). So the entry says how many distinct titles they span."""
    docs = ds.passages[:n_docs]
    if len(docs) < 2:
        return {}
    out = {}
    for name, enc in encoders.items():
        sim = similarity_matrix(store.get_or_encode(docs, enc, progress=False))
        out[name] = {"mean_pairwise_cosine": mean_off_diagonal(sim),
                     "distinct_titles": len({d.title for d in docs}),
                     "matrix": [[round(float(v), 4) for v in row] for row in sim]}
    return out


def training_overlap(checkpoint: Path, ds: Dataset) -> int | None:
    """How many of the dataset's passages the hypernetwork may have been trained on, by its training
    config: of a ``data`` file (questions with their paragraphs), those not in the held-aside list;
    of a ``passages``, ``retrieved`` or ``augmented`` file, those of its questions past
    ``skip_first_questions``. Files match by name. Only the last run's config is read, not those of
    the checkpoints it started from. None if the checkpoint (or the run directory above it) has no
    training config or held-aside list."""
    import yaml

    from .hyper_encoder import provenance_file

    cfg_path = provenance_file(checkpoint, "training_config.yaml")
    held_path = provenance_file(checkpoint, "heldout_hashes.json")
    if cfg_path is None or held_path is None:
        return None
    cfg = yaml.safe_load(cfg_path.read_text()) or {}

    def names(key: str) -> set[str]:
        files = cfg.get(key) or []
        return {Path(f).name for f in ([files] if isinstance(files, str) else files)}

    name = Path(ds.path).name
    hashes = [content_hash(p.text) for p in ds.passages]
    maybe = set()
    if name in names("data"):
        held = set(json.loads(held_path.read_text()))
        maybe |= {h for h in hashes if h not in held}
    if name in names("passages") | names("retrieved") | names("augmented"):
        trained = {content_hash(p.text) for p in passages_of(ds.path, cfg.get("skip_first_questions") or 0)}
        maybe |= {h for h in hashes if h in trained}
    return len(maybe)


def encoder_cost(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoders: dict[str, DocumentEncoder],
                 passages: Sequence[Passage], settings: BenchSettings) -> dict:
    """Seconds to parameterise one document. Exact: augmentation from a cold cache and training,
    per document, median over ``cost_docs`` documents. Hyper: batch 1 and batch 64 (per document),
    split into embedding and hypernetwork, medians over ``repeats``."""
    from .augment import Augmenter
    from .exact import ExactEncoder, training_sequences

    out: dict = {}
    docs = list(passages[: max(settings.cost_docs, 1)])
    exact = encoders.get("exact")
    if isinstance(exact, ExactEncoder) and settings.cost_docs > 0:
        rows = []
        with tempfile.TemporaryDirectory() as cold:
            timed = ExactEncoder(model, tokenizer, exact.lora,
                                 augmenter=Augmenter(model, tokenizer, exact.augmenter.config, cache=Path(cold)))
            timed.augmenter.generator  # a bfloat16 copy is made once per process, not once per document
            for doc in tqdm(docs, desc="exact encoder cost", unit="doc", disable=not settings.progress):
                doc = timed._truncate(doc)[0]  # what encode trains on: a long passage is cut first
                t0 = time.perf_counter()
                [aug] = timed.augmenter.augment([doc], progress=False)
                t1 = time.perf_counter()
                timed.train(training_sequences(doc, aug))
                rows.append({"augment": t1 - t0, "train": time.perf_counter() - t1})
        out["exact"] = {k: statistics.median(r[k] for r in rows) for k in ("augment", "train")}
        out["exact"]["total"] = out["exact"]["augment"] + out["exact"]["train"]
        out["exact"]["n_docs"] = len(rows)
    hyper = encoders.get("hyper")
    if hyper is not None:
        out["hyper"] = hyper_cost(hyper, docs, settings.repeats)
    if "exact" in out and "hyper" in out:
        out["exact_over_hyper"] = {f"batch{b}": out["exact"]["total"] / out["hyper"][f"batch{b}"] for b in (1, 64)}
    return out


def hyper_cost(hyper: HyperEncoder, docs: Sequence[Passage], repeats: int) -> dict:
    import torch

    device = next(hyper.hypernet.parameters()).device

    def clock() -> float:
        """Wall time once queued GPU work has finished, which launching it does not wait for."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    times: dict[str, list[float]] = {"batch1": [], "batch64": [], "embed64": [], "hypernet64": []}
    batch = (list(docs) * 64)[:64]
    hyper.encode(docs[:1])  # warm-up
    for _ in range(max(repeats, 1)):
        # Batch 1 over the same documents as batch 64 (the attention reader's cost grows with tokens).
        t0 = clock()
        for d in docs:
            hyper.encode([d])
        times["batch1"].append((clock() - t0) / len(docs))
        t0 = clock()
        hyper.encode(batch)
        times["batch64"].append((clock() - t0) / 64)
        t0 = clock()
        emb = hyper.source.embed([d.text for d in batch]).to(device)
        t1 = clock()
        with torch.inference_mode():
            hyper.hypernet(emb)
        times["embed64"].append((t1 - t0) / 64)
        times["hypernet64"].append((clock() - t1) / 64)
    return {k: statistics.median(v) for k, v in times.items()}


def query_latency(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ds: Dataset,
                  merged: dict[str, list[DocAdapter]], encoders: dict[str, DocumentEncoder],
                  modes: Sequence[Mode], hyper_merge: str | None,
                  settings: BenchSettings) -> dict:
    """Seconds per single query (batch 1, 8 new tokens, no early stop so every mode writes the same
    length), interleaved across modes, median over questions x repeats. ``hyper+encode`` also
    generates and merges the passages' adapters per query, the cost of never storing them."""
    times: dict[str, list[float]] = {m.name: [] for m in modes}
    on_the_fly = "hyper" in encoders and any(m.encoder == "hyper" for m in modes)
    if on_the_fly:
        times["hyper+encode"] = []
    n = min(settings.latency_queries, len(ds.examples))
    if n == 0:
        return {}
    for _ in range(settings.repeats):
        for i in range(n):
            ex, ps = ds.examples[i], ds.retrieved[i]
            for name in times:
                spec = get_mode("hyper" if name == "hyper+encode" else name)
                prompt = build_prompt(ex.question, ps if spec.passages_in_prompt else ())
                t0 = time.perf_counter()
                adapter = merged[spec.encoder][i] if spec.adapters else None
                if name == "hyper+encode":
                    adapter = merge_adapters(encoders["hyper"].encode(ps), hyper_merge)
                with inject(model, adapter):
                    generate_completions(model, tokenizer, [prompt], max_new_tokens=8, stop="\x00")
                times[name].append(time.perf_counter() - t0)
    out = {m: statistics.median(v) for m, v in times.items()}
    if "rag" in out:
        out["ratio_to_rag"] = {m: out[m] / out["rag"] for m in out if m != "rag"}
    return out


def batch_throughput(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ds: Dataset,
                     merged: dict[str, list[DocAdapter]], settings: BenchSettings) -> dict:
    """Questions per second for one batch of queries, each with its own merged adapter, against
    the same batch with no adapter (closed-book prompts, 8 new tokens each), interleaved."""
    n = min(settings.throughput_queries, len(ds.examples))
    if n == 0:
        return {}
    prompts = [build_prompt(ex.question) for ex in ds.examples[:n]]
    runs = {"plain": None} | {f"per_row_{name}": ads[:n] for name, ads in merged.items()}
    res: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(settings.repeats):
        for key, rows in runs.items():
            t0 = time.perf_counter()
            with inject(model, rows):
                generate_completions(model, tokenizer, prompts, max_new_tokens=8, stop="\x00")
            res[key].append(n / (time.perf_counter() - t0))
    out = {k: statistics.median(v) for k, v in res.items()} | {"batch": n}
    out["ratio_to_plain"] = {k: out[k] / out["plain"] for k in runs if k != "plain"}
    return out


def _versions() -> dict:
    import peft
    import torch
    import transformers

    from . import __version__

    commit = None
    head = Path(__file__).resolve().parent.parent / ".git"
    if head.exists():
        import subprocess
        try:
            commit = subprocess.run(["git", "-C", str(head.parent), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, timeout=10).stdout.strip() or None
        except OSError:
            commit = None
    return {"hyperprag": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"}
