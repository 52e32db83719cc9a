"""``hyperprag`` command line: eval, encode and demo."""
from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.resources import files
from pathlib import Path

from .data import DataError, QAExample, load_questions, read_corpus
from .errors import HyperpragError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a hub at run time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="base model: a local Hugging Face directory (default: the packaged Gemma 3 270M, "
                        "converted once into $HYPERPRAG_CACHE)")
    p.add_argument("--batch-size", type=int, default=8, help="questions answered per forward pass (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest answer generated (default 32)")
    p.add_argument("--top-k", type=int, default=3, help="passages retrieved per question (default 3)")
    p.add_argument("--retriever", choices=("bm25", "dense"), default="bm25",
                   help="bm25 (bm25s, default) or dense (cosine on the sentence embedder)")
    p.add_argument("--embedder", default=None,
                   help="sentence-transformers path for dense retrieval (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_parametric_args(p: argparse.ArgumentParser) -> None:
    from .encoders import ENCODERS, add_encoder_args
    from .merge import MERGE_METHODS

    p.add_argument("--store", default=None,
                   help="adapter store directory, reused and filled on demand "
                        "(default: $HYPERPRAG_CACHE/store)")
    p.add_argument("--encoder", choices=ENCODERS, default="exact",
                   help="how passages become adapters for the parametric modes (default exact)")
    p.add_argument("--merge", choices=MERGE_METHODS, default="sum",
                   help="how the top-k adapters are combined (default sum, the exact sum of deltas)")
    add_encoder_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperprag",
        description="Parametric RAG: answer questions with retrieved documents in the prompt or in the weights.")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "eval", help="answer a question file in one mode and score it (EM/F1)",
        description="Answer every question of FILE in one mode, print progress and a last line "
                    "'EM=<x> F1=<y> n=<n>', and optionally write all predictions as JSON. Modes: "
                    "closed = no passages; rag = top-k retrieved passages in the prompt; prag = the merged "
                    "adapters of the top-k passages injected, no passages in the prompt; prag-combine = "
                    "adapters and passages.")
    ev.add_argument("--data", required=True,
                    help="questions: shared JSONL shape (see README), or native SQuAD v1.1 / HotpotQA JSON")
    ev.add_argument("--corpus", default=None,
                    help="passage corpus JSONL ({id,title,text} a line) to retrieve from; by default each "
                         "question's own candidate passages are ranked")
    ev.add_argument("--mode", required=True, choices=("closed", "rag", "prag", "prag-combine"),
                    help="how documents are used")
    ev.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ev.add_argument("--out", default=None, help="write the result JSON here (mode, n, em, f1, predictions)")
    _add_model_args(ev)
    _add_parametric_args(ev)

    enc = sub.add_parser(
        "encode", help="parameterise every passage of a file into an adapter store",
        description="Turn each passage of FILE into a LoRA adapter and store it. Passages already in the "
                    "store are skipped, so a killed run resumes where it stopped. FILE is a corpus JSONL "
                    "({id,title,text}) or a question file whose passages are encoded.")
    enc.add_argument("--docs", required=True, help="corpus JSONL, or a question file (its passages)")
    enc.add_argument("--limit", type=int, default=None, help="only the first N passages")
    enc.add_argument("--model", default=None, help="base model directory (default: packaged Gemma 3 270M)")
    enc.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_parametric_args(enc)

    demo = sub.add_parser(
        "demo", help="the main job on built-in fictional documents",
        description="Answer questions about a few fictional documents (facts the model cannot know) "
                    "closed-book, with RAG, and with the documents' adapters (prag, prag-combine), and "
                    "print a table. The first run trains the adapters (a few minutes on a CPU).")
    _add_model_args(demo)
    _add_parametric_args(demo)
    # One document per question, and a recipe strong enough for a 270M model to absorb a fact
    # (PRAG's 3e-4 x 1 epoch barely moves it); both are printed and can be overridden.
    demo.set_defaults(top_k=1, lr=1e-3, epochs=3)
    return parser


def _load_examples(args) -> list[QAExample]:
    examples = load_questions(args.data)
    if args.limit is not None:
        if args.limit < 1:
            raise HyperpragError("--limit must be at least 1")
        examples = examples[: args.limit]
    return examples


def _retrieve(args, examples, corpus):
    from .evaluate import retrieve_all
    from .retrieval import build_index

    embedder = None
    if args.retriever == "dense":
        from .embedder import load_embedder
        embedder = load_embedder(args.embedder)
    index = build_index(corpus, args.retriever, embedder) if corpus else None
    if index is None and any(not ex.passages for ex in examples):
        raise HyperpragError("some questions have no candidate passages; pass --corpus to retrieve from")
    return retrieve_all(examples, args.top_k, index, args.retriever, embedder)


def _store(args):
    from .models import cache_dir
    from .store import AdapterStore

    return AdapterStore(args.store or cache_dir() / "store")


def _adapters(args, model, tokenizer, retrieved):
    from .encoders import build_encoder
    from .evaluate import merged_adapters

    encoder = build_encoder(args.encoder, model, tokenizer, args)
    return merged_adapters(retrieved, _store(args), encoder, args.merge, progress=not args.quiet)


def cmd_eval(args) -> int:
    from .evaluate import evaluate, get_mode
    from .models import load_base_model

    examples = _load_examples(args)
    corpus = read_corpus(args.corpus) if args.corpus else None
    retrieved = _retrieve(args, examples, corpus)
    model, tokenizer = load_base_model(args.model)
    adapters = _adapters(args, model, tokenizer, retrieved) if get_mode(args.mode).adapters else None
    result = evaluate(model, tokenizer, examples, args.mode, retrieved, args.batch_size,
                      args.max_new_tokens, progress=not args.quiet, adapters=adapters)
    result["config"] = {k: v for k, v in vars(args).items() if k != "func"}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"EM={result['em']:.4f} F1={result['f1']:.4f} n={result['n']}")
    return 0


def cmd_encode(args) -> int:
    from .adapter import content_hash
    from .encoders import build_encoder
    from .models import load_base_model

    path = Path(args.docs)
    try:
        docs = read_corpus(path)
    except DataError as corpus_err:  # not a corpus: maybe a question file, whose passages we take
        try:
            docs = [p for ex in load_questions(path) for p in ex.passages]
        except DataError:
            raise corpus_err from None
    docs = list({content_hash(d.text): d for d in docs}.values())[: args.limit]
    model, tokenizer = load_base_model(args.model)
    encoder = build_encoder(args.encoder, model, tokenizer, args)
    store = _store(args)
    adapters = store.get_or_encode(docs, encoder, progress=not args.quiet)
    failed = sum(1 for a in adapters if "augmentation_failed" in a.extra)
    sizes = [r.bytes for r in store.records() if r.encoder == encoder.key]
    print(f"stored={len(adapters)} augmentation_failed={failed} store={store.root} "
          f"bytes_per_doc={sum(sizes) // max(len(sizes), 1)}")
    return 0


def cmd_demo(args) -> int:
    from .evaluate import evaluate
    from .models import load_base_model

    data_dir = files("hyperprag") / "demo_data"
    examples = load_questions(data_dir / "questions.jsonl")
    corpus = read_corpus(data_dir / "documents.jsonl")
    retrieved = _retrieve(args, examples, corpus)
    print("Loading the base model (the first run converts the packaged GGUF, about two minutes)...")
    model, tokenizer = load_base_model(args.model)
    print(f"Encoding the documents into adapters with the exact encoder (lr {args.lr:g}, {args.epochs} "
          f"epochs; cached in the store after the first run)...")
    adapters = _adapters(args, model, tokenizer, retrieved)
    results = {mode: evaluate(model, tokenizer, examples, mode, retrieved, args.batch_size,
                              args.max_new_tokens, progress=not args.quiet, adapters=adapters)
               for mode in ("closed", "rag", "prag", "prag-combine")}
    _print_demo_table(examples, results)
    return 0


def _print_demo_table(examples, results: dict[str, dict]) -> None:
    modes = list(results)
    width = 20
    header = f"{'question':<50} {'gold':<18} " + " ".join(f"{m:<{width}}" for m in modes)
    print("\n" + header + "\n" + "-" * len(header))
    for i, ex in enumerate(examples):
        cells = " ".join(f"{results[m]['predictions'][i]['prediction'][:width]:<{width}}" for m in modes)
        print(f"{ex.question[:50]:<50} {ex.answers[0][:18]:<18} {cells}")
    print("-" * len(header))
    for m in modes:
        r = results[m]
        print(f"{m:<8} EM={r['em']:.3f} F1={r['f1']:.3f} s/question={r['seconds_per_question']:.2f}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"eval": cmd_eval, "encode": cmd_encode, "demo": cmd_demo}[args.command]
    try:
        return handler(args)
    except (DataError, HyperpragError, ValueError) as err:
        print(f"hyperprag: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hyperprag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
