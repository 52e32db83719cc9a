"""benchmarks/centered_merge.py: the low-rank centred merge is the formula it claims."""
import sys
from pathlib import Path

import torch

from conftest import random_adapter, tiny_model
from hyperprag.merge import merge_adapters

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from centered_merge import centred_merge, mean_delta  # noqa: E402


def test_centred_merge_keeps_the_common_part_once_and_sums_the_rest():
    model = tiny_model()
    ads = [random_adapter(model, s) for s in (1, 2, 3)]
    full_rank = min(ads[0].factors[n][0].shape[1] for n in ads[0].factors)
    common = mean_delta(ads, rank=full_rank)  # exact at full rank
    merged = centred_merge(ads, 1.0, common)
    for name in ads[0].factors:
        deltas = [a.delta(name) for a in ads]
        c = sum(deltas) / 3
        assert torch.allclose(common[name][1] @ common[name][0], c, atol=1e-5)
        assert torch.allclose(merged.delta(name), sum(deltas) - 2 * c, atol=1e-5)  # = c + sum(d - c)


def test_centred_merge_at_one_over_k_is_the_library_mean_whatever_the_common_part():
    model = tiny_model()
    ads = [random_adapter(model, s) for s in (4, 5)]
    common = mean_delta([random_adapter(model, 9)], rank=1)
    merged, mean = centred_merge(ads, 0.5, common), merge_adapters(ads, "mean")
    for name in ads[0].factors:
        assert torch.allclose(merged.delta(name), (ads[0].delta(name) + ads[1].delta(name)) / 2, atol=1e-6)
        assert torch.allclose(merged.delta(name), mean.delta(name), atol=1e-6)


def test_mean_delta_truncates_to_the_rank_asked():
    model = tiny_model()
    common = mean_delta([random_adapter(model, s) for s in (1, 2, 3)], rank=3)
    a, b = next(iter(common.values()))
    assert a.shape[0] == 3 and b.shape[1] == 3
    assert int(torch.linalg.matrix_rank(b @ a)) == 3
