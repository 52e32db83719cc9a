import pytest
import torch

from conftest import ARCHS, random_adapter, tiny_model
from hyperprag.adapter import AdapterMismatchError, DocAdapter
from hyperprag.inject import inject
from hyperprag.merge import merge_adapters

IDS = torch.tensor([[5, 17, 300, 42, 9, 77], [8, 1000, 3, 4, 12, 2]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_bytes_round_trip_keeps_factors_and_metadata():
    model = tiny_model()
    ad = random_adapter(model)
    ad.extra["note"] = "x"
    back = DocAdapter.from_bytes(ad.to_bytes())
    assert back.metadata() == ad.metadata()
    for name in ad.factors:
        assert torch.equal(back.factors[name][0], ad.factors[name][0])
        assert torch.equal(back.factors[name][1], ad.factors[name][1])


def test_one_adapter_always_gives_the_same_bytes():
    # safetensors orders the header's metadata at random; equal adapters must hash equal in the store
    from safetensors.torch import load

    ad = random_adapter(tiny_model())
    ad.extra.update(title="Ünïcode ☃", passages=3)
    first = ad.to_bytes()
    assert all(ad.to_bytes() == first for _ in range(20))
    assert int.from_bytes(first[:8], "little") % 8 == 0
    assert DocAdapter.from_bytes(first).extra == ad.extra and len(load(first)) == 2 * len(ad.factors)


def test_damaged_bytes_are_reported():
    with pytest.raises(Exception, match="not a readable adapter"):
        DocAdapter.from_bytes(b"garbage" * 10, "x.safetensors")


@pytest.mark.parametrize("arch", ARCHS)
def test_injection_changes_output_and_restores_base_exactly(arch):
    model = tiny_model(arch)
    ids = IDS.clamp(max=model.config.vocab_size - 1)
    base = logits(model, ids)
    with inject(model, random_adapter(model)):
        injected = logits(model, ids)
    assert not torch.allclose(base, injected, atol=1e-4)
    assert torch.equal(logits(model, ids), base)


def test_hook_injection_equals_materialised_delta():
    model = tiny_model()
    ad = random_adapter(model)
    with inject(model, ad):
        hooked = logits(model)
    with torch.no_grad():
        for name in ad.factors:
            model.get_submodule(name).weight += ad.delta(name)
    assert torch.allclose(hooked, logits(model), atol=1e-5)


def test_sum_merge_is_exact_sum_of_deltas_and_mean_is_average():
    model = tiny_model()
    ads = [random_adapter(model, seed=s) for s in range(3)]
    merged = merge_adapters(ads, "sum")
    mean = merge_adapters(ads, "mean")
    assert merged.rank == 6
    for name in ads[0].factors:
        total = sum(a.delta(name) for a in ads)
        assert torch.allclose(merged.delta(name), total, atol=1e-6)
        assert torch.allclose(mean.delta(name), total / 3, atol=1e-6)
        assert torch.allclose(merge_adapters(ads, "concat").delta(name), total, atol=1e-6)
    # the hash names the delta: a sum and a mean of the same sources differ, sum and concat do not
    assert merged.doc_hash != mean.doc_hash and merged.doc_hash == merge_adapters(ads, "concat").doc_hash


@pytest.mark.parametrize("arch", ARCHS)  # OPT flattens its rows before the FFN (session 29's fix)
def test_per_row_batch_equals_rows_one_by_one(arch):
    model = tiny_model(arch)
    a1 = merge_adapters([random_adapter(model, 1), random_adapter(model, 2)])  # rank 4
    a2 = random_adapter(model, 3)                                             # rank 2
    ids = torch.cat([IDS, IDS[:1]])
    with inject(model, [a1, a2, None]):
        batched = logits(model, ids)
    with inject(model, a1):
        row0 = logits(model, ids[0:1])
    with inject(model, a2):
        row1 = logits(model, ids[1:2])
    row2 = logits(model, ids[2:3])
    assert torch.allclose(batched, torch.cat([row0, row1, row2]), atol=1e-5)


def test_per_row_adapters_over_different_modules_each_keep_their_own():
    """Module names came from the first row's adapter: a later row's extra modules were dropped."""
    model = tiny_model()
    full = random_adapter(model, 1)
    down = list(full.factors)[2]
    partial = DocAdapter({down: full.factors[down]}, full.scaling, full.base_model, "test", "1", "partial")
    with inject(model, [partial, full]):
        batched = logits(model)
    with inject(model, partial):
        row0 = logits(model, IDS[0:1])
    with inject(model, full):
        row1 = logits(model, IDS[1:2])
    assert torch.allclose(batched, torch.cat([row0, row1]), atol=1e-5)


def test_adapter_for_another_model_is_refused_naming_both():
    model = tiny_model()
    ad = random_adapter(model)
    ad.base_model = "gemma-3-270m"
    with pytest.raises(AdapterMismatchError, match="'gemma-3-270m', not 'tiny-llama'"):
        with inject(model, ad):
            pass


def test_adapter_with_other_shapes_is_refused():
    model = tiny_model("llama")
    ad = random_adapter(model)
    name = next(iter(ad.factors))
    a, b = ad.factors[name]
    ad.factors[name] = (torch.zeros(2, a.shape[1] + 1), b)
    with pytest.raises(AdapterMismatchError, match="in 'tiny-llama' it is"):
        with inject(model, ad):
            pass
