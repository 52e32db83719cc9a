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


def test_shipped_hypernetwork_holds_each_fictional_passage_and_only_its_own(real_model):
    """The default checkpoint, found without flags, gives each document an adapter under which the
    model predicts *that* document's text better than under another document's adapter. The facts
    are invented, so the base model cannot know them."""
    from hyperprag.diagnostics import passage_loss
    from hyperprag.hyper_encoder import HyperEncoder

    model, tokenizer = real_model
    docs = [DOC,
            Passage("Orrun Falls", "The Orrun Falls drop 212 metres into Lake Ennisar. They were first "
                    "mapped in 1788 by the surveyor Tobiah Wend, who named them after his daughter."),
            Passage("Kelmash", "Kelmash is a stew of smoked barley and plum from the valley of Orrun. It is "
                    "served at the Lantern Fair each October with black rye bread.")]
    own = HyperEncoder.from_pretrained(None, model, tokenizer).encode(docs)
    for i, doc in enumerate(docs):
        others = [own[j] for j in range(len(docs)) if j != i]
        mine = passage_loss(model, tokenizer, [doc], [own[i]])
        assert all(mine < passage_loss(model, tokenizer, [doc], [o]) for o in others), doc.title
