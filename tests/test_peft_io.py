import json

import pytest
import torch

from conftest import random_adapter, tiny_model
from hyperprag.errors import HyperpragError
from hyperprag.inject import inject
from hyperprag.merge import merge_adapters
from hyperprag.peft_io import export_peft, import_peft

IDS = torch.tensor([[5, 17, 300, 42, 9, 77]])


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_peft_loads_export_and_matches_hook_injection(tmp_path, arch):
    from peft import PeftModel

    model = tiny_model(arch)
    merged = merge_adapters([random_adapter(model, 1), random_adapter(model, 2), random_adapter(model, 3)])
    with torch.no_grad(), inject(model, merged):
        hooked = model(input_ids=IDS).logits
    export_peft(merged, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(tiny_model(arch), tmp_path / "peft").eval()
    with torch.no_grad():
        via_peft = peft_model(input_ids=IDS).logits
    assert torch.allclose(hooked, via_peft, atol=1e-5)


def test_single_adapter_keeps_its_scaling_in_peft_config(tmp_path):
    model = tiny_model()
    export_peft(random_adapter(model), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] / config["r"] == 16.0


def test_import_round_trip_gives_same_deltas(tmp_path):
    model = tiny_model()
    ad = random_adapter(model)
    export_peft(ad, tmp_path)
    back = import_peft(tmp_path, model)
    assert back.encoder == "peft" and back.base_model == "tiny-llama"
    for name in ad.factors:
        assert torch.allclose(back.delta(name), ad.delta(name), atol=1e-6)


def test_import_of_peft_trained_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = tiny_model()
    peft_model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                         target_modules=["gate_proj", "up_proj", "down_proj"]))
    peft_model.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = peft_model(input_ids=IDS).logits
    ad = import_peft(tmp_path, model)
    assert ad.rank == 4 and ad.scaling == 2.0
    with torch.no_grad(), inject(model, ad):
        assert torch.allclose(model(input_ids=IDS).logits, expected, atol=1e-5)


def test_import_refuses_non_ffn_modules(tmp_path):
    from peft import LoraConfig, get_peft_model

    get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path)
    with pytest.raises(HyperpragError, match="not an FFN projection"):
        import_peft(tmp_path, tiny_model())


def test_import_refuses_what_it_cannot_represent_in_one_line(tmp_path):
    """Per-module ranks or alphas and DoRA would import silently wrong; a half-written file would
    give a KeyError traceback."""
    import json

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    ffn = ["gate_proj", "up_proj", "down_proj"]
    for i, (extra, message) in enumerate([({"alpha_pattern": {"down_proj": 64}}, "sets alpha_pattern"),
                                         ({"rank_pattern": {"down_proj": 4}}, "sets rank_pattern"),
                                         ({"use_dora": True}, "DoRA"),
                                         ({"lora_bias": True}, "lora_B.bias' .*is not a LoRA factor"),
                                         ({"modules_to_save": ["lm_head"]}, "lm_head.* is not a LoRA factor")]):
        out = tmp_path / f"refused{i}"
        get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=ffn, **extra)).save_pretrained(out)
        with pytest.raises(HyperpragError, match=message):
            import_peft(out, tiny_model())
    out = tmp_path / "plain"
    get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=ffn)).save_pretrained(out)
    weights = out / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(str(weights)).items() if "layers.0.mlp.up_proj.lora_B" not in k}, str(weights))
    with pytest.raises(HyperpragError, match="up_proj' has lora_A but no lora_B"):
        import_peft(out, tiny_model())
    config = json.loads((out / "adapter_config.json").read_text())
    del config["lora_alpha"]
    (out / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(HyperpragError, match="lacks 'r' or 'lora_alpha'"):
        import_peft(out, tiny_model())


def test_an_imports_hash_names_its_delta_scaling_included(tmp_path):
    """The doc hash names the delta for merges and resumed runs: the same export twice is one
    adapter, the same weights at another lora_alpha another."""
    model = tiny_model()
    ad = random_adapter(model)
    for name, alpha in (("a", None), ("b", 4)):
        export_peft(ad, tmp_path / name)
        if alpha:
            path = tmp_path / name / "adapter_config.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "lora_alpha": alpha}))
        export_peft(ad, tmp_path / f"{name}-again")  # safetensors may write its metadata in another order
    a, b = import_peft(tmp_path / "a", model), import_peft(tmp_path / "b", model)
    assert import_peft(tmp_path / "a-again", model).doc_hash == a.doc_hash
    assert a.scaling != b.scaling and a.doc_hash != b.doc_hash
    assert merge_adapters([a]).doc_hash != merge_adapters([b]).doc_hash


def test_rslora_scaling_the_base_path_and_missing_files(tmp_path):
    model = tiny_model()
    ad = random_adapter(model)
    export_peft(ad, tmp_path / "a", base_model_path="/models/tiny")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "/models/tiny"
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    assert import_peft(tmp_path / "a", model).scaling == pytest.approx(config["lora_alpha"] / 2 ** 0.5)
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(HyperpragError, match="only LoRA adapters can be imported, not IA3"):
        import_peft(tmp_path / "a", model)
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    (tmp_path / "a" / "adapter_model.safetensors").unlink()
    with pytest.raises(HyperpragError, match="no adapter_model.safetensors"):
        import_peft(tmp_path / "a", model)
    with pytest.raises(HyperpragError, match="not a PEFT adapter directory"):
        import_peft(tmp_path / "empty", model)


def test_the_same_factors_on_another_module_are_another_adapter(tmp_path):
    from hyperprag.adapter import DocAdapter

    model = tiny_model()
    ad = random_adapter(model)
    gate, up = [n for n in ad.factors if n.startswith("model.layers.0.")][:2]
    for name, module in (("g", gate), ("u", up)):
        export_peft(DocAdapter({module: ad.factors[gate]}, ad.scaling, ad.base_model, "test", "1", "x"), tmp_path / name)
    assert import_peft(tmp_path / "g", model).doc_hash != import_peft(tmp_path / "u", model).doc_hash
