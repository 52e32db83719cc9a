"""benchmarks/hyper_soup.py: the soup is the element-wise mean of its checkpoints, loads as a
checkpoint, and checkpoints of another architecture or held-aside set are refused."""
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_model
from hyperprag.hyper_encoder import HyperEncoder
from test_hyper import DOCS, HashSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from hyper_soup import soup  # noqa: E402


def _checkpoint(path: Path, seed: int, hidden: int = 32, heldout: list[str] | None = None) -> Path:
    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=hidden)
    gen = torch.Generator().manual_seed(seed)  # runs of one lineage: the same start, moved apart
    with torch.no_grad():
        for p in enc.hypernet.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    enc.save_pretrained(path)
    (path / "heldout_hashes.json").write_text(json.dumps(heldout or ["h1"]))
    return path


def test_soup_is_the_mean_and_loads(tmp_path):
    a, b = _checkpoint(tmp_path / "a", 1), _checkpoint(tmp_path / "b", 2)
    out = soup([a, b], tmp_path / "soup")
    wa, wb, ws = (load_file(str(p / "model.safetensors")) for p in (a, b, out))
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert differ and all(torch.allclose(ws[k], (wa[k] + wb[k]) / 2) for k in wa)
    assert json.loads((out / "heldout_hashes.json").read_text()) == ["h1"]
    enc = HyperEncoder.from_pretrained(out, tiny_model(), source=HashSource())
    assert len(enc.encode(DOCS)) == len(DOCS)


def test_soup_refuses_another_lineage(tmp_path):
    a = _checkpoint(tmp_path / "a", 1)
    with pytest.raises(SystemExit, match="another config"):
        soup([a, _checkpoint(tmp_path / "b", 2, hidden=16)], tmp_path / "s")
    with pytest.raises(SystemExit, match="held aside other documents"):
        soup([a, _checkpoint(tmp_path / "c", 2, heldout=["h2"])], tmp_path / "s")
    assert not (tmp_path / "s").exists()
