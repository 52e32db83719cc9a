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


def test_merge_weighs_each_adapter_by_its_own_scaling_and_refuses_what_does_not_fit():
    from dataclasses import replace

    model = tiny_model()
    a, b = random_adapter(model, 1, scaling=16.0), random_adapter(model, 2, scaling=2.0)
    for name in a.factors:
        assert torch.allclose(merge_adapters([a, b]).delta(name), a.delta(name) + b.delta(name), atol=1e-6)
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_adapters([])
    with pytest.raises(ValueError, match="unknown merge method 'weighted'"):
        merge_adapters([a, b], "weighted")
    with pytest.raises(AdapterMismatchError, match="another-model"):
        merge_adapters([a, replace(b, base_model="another-model")])
    fewer = replace(b, factors=dict(list(b.factors.items())[:1]))
    for pair in ([a, fewer], [fewer, a]):
        with pytest.raises(AdapterMismatchError, match="other modules"):
            merge_adapters(pair)


def test_dropout_acts_only_while_training_and_per_row_lists_are_checked_row_by_row():
    from hyperprag.inject import lora_hooks

    model = tiny_model()
    ad = random_adapter(model, 1, scaling=50.0)
    factors = {n: (a_, b_ * ad.scaling) for n, (a_, b_) in ad.factors.items()}

    def run(dropout, grad):
        torch.manual_seed(0)
        with torch.set_grad_enabled(grad), lora_hooks(model, factors, dropout=dropout):
            return model(input_ids=IDS).logits.detach()

    assert torch.equal(run(0.5, False), run(0.0, False))  # inference never drops
    assert not torch.allclose(run(0.9, True), run(0.0, True), atol=1e-4)  # training does
    rows = {n: (a_.unsqueeze(0), b_.unsqueeze(0)) for n, (a_, b_) in factors.items()}  # one row's factors
    with pytest.raises(ValueError, match="batch has 2 rows but 1 per-row adapters"):
        with lora_hooks(model, rows):
            model(input_ids=IDS)
    from dataclasses import replace
    with pytest.raises(AdapterMismatchError, match="another-model"):
        with inject(model, [ad, replace(ad, base_model="another-model")]):
            pass


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
