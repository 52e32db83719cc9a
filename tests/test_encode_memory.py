"""benchmarks/encode_memory.py: what a kept adapter keeps alive."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from encode_memory import held_bytes  # noqa: E402


def test_held_bytes_counts_a_shared_storage_once_and_whole():
    batch = torch.zeros(4, 3, 5)                       # four documents' factors in one tensor
    views = {"up": (batch[0, :2], batch[0, 2:])}         # one document's, as views
    own = {"up": (batch[0, :2].clone(), batch[0, 2:].clone())}
    assert held_bytes(views) == (15 * 4, 60 * 4)       # its 15 floats keep the batch's 60 alive
    assert held_bytes(own) == (15 * 4, 15 * 4)
