"""End-to-end on the real default model (converted into the cache on first use)."""
import pytest

from hyperprag.data import Passage
from hyperprag.generation import generate_answers
from hyperprag.metrics import best_em_f1
from hyperprag.models import find_ffn_targets
from hyperprag.prompts import build_prompt

pytestmark = pytest.mark.slow

DOC = Passage("Brindlewood Library", "Brindlewood Library in the city of Calverstone holds the Amberlin "
              "Codex, a manuscript written in 1412. The library was designed by the architect Mira Castellane.")


def test_default_model_answers_from_a_passage_it_cannot_know(real_model):
    model, tokenizer = real_model
    question = "Who designed Brindlewood Library?"
    closed, rag = generate_answers(model, tokenizer, [build_prompt(question), build_prompt(question, [DOC])])
    assert best_em_f1(rag, ["Mira Castellane"])[0] == 1.0
    assert "Castellane" not in closed


def test_default_model_has_gemma_ffn_targets(real_model):
    model, _ = real_model
    targets = find_ffn_targets(model)
    assert len(targets) == 18 * 3
    assert {(t.role, t.in_features, t.out_features) for t in targets} == {
        ("gate", 640, 2048), ("up", 640, 2048), ("down", 2048, 640)}


def test_loading_the_default_model_checks_its_tokenizer(real_model, monkeypatch):
    import hyperprag.models as models
    from hyperprag.errors import HyperpragError

    monkeypatch.setattr(models, "_TOKENIZER_PROBE_IDS", models._TOKENIZER_PROBE_IDS[:-1])
    with pytest.raises(HyperpragError, match="rebuilt the packaged Gemma 3 270M tokenizer differently"):
        models.load_base_model()
