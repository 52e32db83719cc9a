"""Knowledge injection on the real default model: a fictional document goes into the weights.

The recipe is stronger than PRAG's default (lr 1e-3, 3 epochs instead of 3e-4, 1 epoch): on a
270M model the paper's single epoch barely moves the weights (see the benchmark report), and this
test is about the mechanism (augment -> train -> store -> merge -> inject) carrying knowledge.
"""
import pytest

from hyperprag.augment import AugmentConfig, Augmenter
from hyperprag.data import Passage
from hyperprag.exact import ExactEncoder, LoraTrainConfig
from hyperprag.generation import generate_answers
from hyperprag.inject import inject
from hyperprag.merge import merge_adapters
from hyperprag.metrics import best_em_f1
from hyperprag.prompts import build_prompt
from hyperprag.store import AdapterStore

pytestmark = pytest.mark.slow

DOC = Passage("Quillon Bay Observatory",
              "The Quillon Bay Observatory opened in 1931 on the island of Marrowick. Its first director was "
              "the astronomer Tessaly Vorne, who discovered the comet Harrowfell in 1934. The observatory's "
              "main telescope is called the Brass Giant.")
OTHER = Passage("Zentari cuisine", "Zentari cuisine comes from the mountain valley of Orrun. Its national dish "
                "is kelmash, a stew of smoked barley and plum.")
QUESTION = "Who was the first director of the Quillon Bay Observatory?"
GOLD = ["Tessaly Vorne"]


def test_document_knowledge_is_answered_from_the_weights(real_model, tmp_path):
    model, tokenizer = real_model
    prompt = build_prompt(QUESTION)
    [closed] = generate_answers(model, tokenizer, [prompt])
    assert best_em_f1(closed, GOLD)[1] == 0.0, f"the base model already knows: {closed!r}"

    # Greedy augmentation only, two QA pairs (what the first attempt writes here): a sampled retry
    # makes the training data, and so this test, hang on one draw of the random stream.
    encoder = ExactEncoder(model, tokenizer, LoraTrainConfig(lr=1e-3, epochs=3),
                           augmenter=Augmenter(model, tokenizer, AugmentConfig(n_qa=2, max_retries=0),
                                               cache=tmp_path / "augment"))
    store = AdapterStore(tmp_path / "store")
    doc_ad, other_ad = store.get_or_encode([DOC, OTHER], encoder, progress=False)
    assert "augmentation_failed" not in doc_ad.extra

    with inject(model, doc_ad):
        [alone] = generate_answers(model, tokenizer, [prompt])
    with inject(model, merge_adapters([doc_ad, other_ad], "sum")):
        [merged] = generate_answers(model, tokenizer, [prompt])
    assert best_em_f1(alone, GOLD)[0] == 1.0, alone
    assert best_em_f1(merged, GOLD)[1] > 0.0, merged
    assert generate_answers(model, tokenizer, [prompt]) == [closed]  # the base model is back
