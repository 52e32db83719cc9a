"""benchmarks/adapter_rank.py: how much of an adapter's rank it uses."""
import sys
from pathlib import Path

import pytest
import torch

from conftest import random_adapter, tiny_model
from hyperprag.models import find_ffn_targets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from adapter_rank import beyond_top, rank_use  # noqa: E402


def test_energy_beyond_the_top_direction_is_that_of_the_dense_delta():
    torch.manual_seed(0)
    a, b = torch.randn(3, 40), torch.randn(24, 3)
    s2 = torch.linalg.svdvals(b.double() @ a.double()).square()
    assert beyond_top(a, b) == pytest.approx(float(1 - s2[0] / s2.sum()), rel=1e-9)
    # one rank-1 piece twice over uses one direction; two orthogonal pieces of equal size use two halves
    assert beyond_top(torch.stack([a[0], 2 * a[0]]), b[:, :2]) == pytest.approx(0.0, abs=1e-9)
    eye = torch.eye(4)
    assert beyond_top(eye[:2], eye[:, :2]) == pytest.approx(0.5)


def test_rank_use_reads_each_role_from_the_targets_and_sees_parallel_rows():
    model = tiny_model()
    roles = {t.name: t.role for t in find_ffn_targets(model)}
    spread = random_adapter(model, seed=1)
    parallel = random_adapter(model, seed=1)
    for name, (a, b) in parallel.factors.items():
        parallel.factors[name] = (torch.stack([a[0], -3 * a[0]]), b)
    got, flat = rank_use([spread], roles), rank_use([parallel], roles)
    assert set(got) == set(roles.values())
    for role in got:
        assert got[role]["a_cos"] < 0.5 and got[role]["beyond_top"] > 0.05
        assert flat[role]["a_cos"] == pytest.approx(1.0) and flat[role]["beyond_top"] == pytest.approx(0.0, abs=1e-9)
        assert flat[role]["b_cos"] == pytest.approx(got[role]["b_cos"])  # only A was made parallel
    with pytest.raises(SystemExit, match="rank 1"):
        rank_use([random_adapter(model, rank=1)], roles)


def test_rank_reads_are_one_read_when_the_ranks_queries_are_the_same(tokenizer):
    """benchmarks/adapter_rank/reads.py: rank 0 and rank 1 read the same tokens exactly when their
    slot queries agree, and apart when those differ."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "adapter_rank"))
    from reads import rank_reads

    from hyperprag.embeddings import build_source
    from hyperprag.hyper_encoder import HyperEncoder

    model = tiny_model()
    enc = HyperEncoder.create(model, build_source("token-seq", model, tokenizer), hidden=32, tie_reads=True)
    texts = ["The Glass Regatta is rowed on Lake Ennisar.", "Kelmash is a barley stew from the north."]
    with torch.no_grad():
        enc.hypernet.slot_embed[1] = enc.hypernet.slot_embed[0]
    same = rank_reads(enc, texts)
    assert same["ranks"] == pytest.approx(1.0) and same["ranks_least"] == pytest.approx(1.0)
    assert 0 < same["entropy"] <= 1 + 1e-6
    with torch.no_grad():
        enc.hypernet.slot_embed[1] = -50 * enc.hypernet.slot_embed[0]
    assert rank_reads(enc, texts)["ranks"] < 0.99


@pytest.mark.parametrize("b_gain", [False, True])
def test_b_gains_part_the_columns_that_a_rank_shared_read_makes_parallel(tokenizer, b_gain):
    """With tied reads, rank k's A row and B column are made from rank k's read, and a fresh
    network's ranks read nearly alike: even with A's rows apart (row_bias) the B columns come out
    parallel and the delta is rank 1, as v8's are. B's per-rank gains (mean 1 over the ranks) make
    the columns different functions of that read, and the delta uses its second direction."""
    from hyperprag.data import Passage
    from hyperprag.embeddings import build_source
    from hyperprag.hyper_encoder import HyperEncoder

    model = tiny_model("gemma3_text")
    torch.manual_seed(0)
    enc = HyperEncoder.create(model, build_source("token-seq", model, tokenizer), hidden=32, tie_reads=True,
                              copy_tokens=True, read_rank=8, row_bias=True, b_gain=b_gain)
    texts = ["The Glass Regatta is rowed on Lake Ennisar.", "Kelmash is a barley stew from the north."]
    got = rank_use(enc.encode([Passage(f"d{i}", t) for i, t in enumerate(texts)]), {t.name: t.role for t in find_ffn_targets(model)})
    for role, use in got.items():
        assert use["a_cos"] < 0.9, role
        if b_gain:
            assert use["b_cos"] < 0.95 and use["beyond_top"] > 0.02, (role, use)
        else:
            assert use["b_cos"] > 0.99 and use["beyond_top"] < 1e-3, (role, use)
    if b_gain:
        for gain in enc.hypernet.b_read_gain.values():
            assert gain.shape == (enc.hypernet.config.num_layers, 2, 8)
            assert torch.allclose(gain.mean(1), torch.ones(())) and (gain[:, 0] - gain[:, 1]).abs().mean() > 0.5
        from hyperprag.hypernet import HyperNetConfig, HyperNetwork
        with pytest.raises(ValueError, match="b_gain needs the attention reader"):
            HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), 16, b_gain=True))


def test_fresh_reports_the_mean_energy_per_role_and_the_deltas_relative_move():
    """benchmarks/adapter_rank/fresh.py: a rank-1 and an orthogonal rank-2 delta average to a
    quarter beyond the top direction; deltas twice as large moved by their own size."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "adapter_rank"))
    from fresh import energy_beyond_top, relative_move

    eye = torch.eye(4)
    a = torch.stack([torch.stack([eye[0], eye[0]]), eye[:2]])[:, None]     # (docs, layers, r, in)
    b = torch.stack([eye[:, :2], eye[:, :2]])[:, None]                     # (docs, layers, out, r)
    assert energy_beyond_top({"up": (a, b)}) == {"up": pytest.approx(0.25)}
    assert relative_move({"up": (a, b)}, {"up": (a, b)}) == 0.0
    assert relative_move({"up": (a, b)}, {"up": (a, 2 * b)}) == pytest.approx(1.0)
