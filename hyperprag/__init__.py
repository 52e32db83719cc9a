"""hyperprag: Parametric RAG with trained or generated per-document LoRA adapters."""
from .data import DataError, Passage, QAExample, load_questions, read_corpus, read_qa_jsonl
from .embedder import load_embedder
from .errors import HyperpragError, MissingDependencyError
from .metrics import best_em_f1, exact_match, normalize_answer, token_f1
from .models import FFNTarget, find_ffn_targets, load_base_model
from .prompts import build_prompt, extract_answer
from .retrieval import BM25Index, DenseIndex, build_index, retrieve

__version__ = "0.1.0"
__all__ = [
    "DataError", "Passage", "QAExample", "load_questions", "read_corpus", "read_qa_jsonl",
    "load_embedder", "HyperpragError", "MissingDependencyError", "best_em_f1", "exact_match",
    "normalize_answer", "token_f1", "FFNTarget", "find_ffn_targets", "load_base_model",
    "build_prompt", "extract_answer", "BM25Index", "DenseIndex", "build_index", "retrieve",
]
