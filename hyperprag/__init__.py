"""hyperprag: Parametric RAG with trained or generated per-document LoRA adapters.

Data flows one way: documents -> encoder (exact or hyper) -> DocAdapter -> store -> merge ->
inject -> generate.
"""
from .adapter import AdapterMismatchError, DocAdapter, content_hash
from .data import DataError, Passage, QAExample, load_questions, read_corpus, read_qa_jsonl
from .embedder import load_embedder
from .encoder import DocumentEncoder
from .errors import HyperpragError, MissingDependencyError
from .exact import RECIPES, ExactEncoder, LoraTrainConfig
from .hyper_encoder import HyperEncoder
from .inject import inject
from .merge import merge_adapters
from .metrics import best_em_f1, exact_match, normalize_answer, token_f1
from .models import FFNTarget, find_ffn_targets, load_base_model
from .peft_io import export_peft, import_peft
from .prompts import build_prompt, extract_answer
from .retrieval import BM25Index, DenseIndex, build_index, retrieve
from .store import AdapterStore

__version__ = "0.1.0"
__all__ = [
    "AdapterMismatchError", "DocAdapter", "content_hash", "DataError", "Passage", "QAExample",
    "load_questions", "read_corpus", "read_qa_jsonl", "load_embedder", "DocumentEncoder",
    "HyperpragError", "MissingDependencyError", "ExactEncoder", "LoraTrainConfig", "RECIPES", "HyperEncoder",
    "inject", "merge_adapters", "best_em_f1", "exact_match", "normalize_answer", "token_f1",
    "FFNTarget", "find_ffn_targets", "load_base_model", "export_peft", "import_peft",
    "build_prompt", "extract_answer", "BM25Index", "DenseIndex", "build_index", "retrieve",
    "AdapterStore",
]
