import math

import pytest
import torch

from conftest import SpaceFirst, random_adapter, tiny_model
from hyperprag.diagnostics import (answer_loss, delta_inner, distractors, mean_pairwise_cosine,
                                   similarity_matrix, sources, specificity, wrong_document)
from hyperprag.merge import merge_adapters


def test_delta_inner_matches_materialised_deltas():
    model = tiny_model()
    x, y = random_adapter(model, 1), random_adapter(model, 2)
    full = sum(float((x.delta(n) * y.delta(n)).sum()) for n in x.factors)
    assert delta_inner(x, y) == pytest.approx(full, rel=1e-4)


def test_identical_adapters_have_cosine_one_and_independent_ones_near_zero():
    model = tiny_model()
    same = [random_adapter(model, 1, doc=f"d{i}") for i in range(3)]
    assert mean_pairwise_cosine(same) == pytest.approx(1.0, abs=1e-6)
    different = [random_adapter(model, s) for s in range(4)]
    assert abs(mean_pairwise_cosine(different)) < 0.2
    assert torch.allclose(similarity_matrix(different).diagonal(), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least two adapters"):  # one has no pair: not a cosine of nan
        mean_pairwise_cosine(different[:1])


def test_wrong_document_never_keeps_the_right_one():
    model = tiny_model()
    ads = [random_adapter(model, s) for s in range(3)] * 2
    wrong = wrong_document(ads, seed=3)
    assert all(w.doc_hash != a.doc_hash for w, a in zip(wrong, ads))
    with pytest.raises(ValueError):
        wrong_document([ads[0], ads[0]])


def test_wrong_document_shares_no_document_with_a_merged_retrieval():
    # top-2 retrievals [p1,p2], [p2,p1], [p1,p3], [p4,p5]: only the last is disjoint from the first three,
    # and a sum of the same passages in another order is the same delta, so nothing else may stand in
    model = tiny_model()
    p = [random_adapter(model, s, doc=f"p{s}") for s in range(1, 6)]
    merged = [merge_adapters(pair) for pair in ([p[0], p[1]], [p[1], p[0]], [p[0], p[2]], [p[3], p[4]])]
    for seed in range(20):
        wrong = wrong_document(merged, seed=seed)
        assert [w.doc_hash for w in wrong[:3]] == [merged[3].doc_hash] * 3
        assert not sources(wrong[3]) & sources(merged[3])
    with pytest.raises(ValueError, match="question 0's documents are in every retrieval"):
        wrong_document(merged[:3])


def test_wrong_document_draws_as_before_where_retrievals_do_not_overlap():
    # the figures already reported drew with rng.choice and rejected only the same hash
    import random
    model = tiny_model()
    ads = [random_adapter(model, s) for s in range(5)] * 3
    rng, before = random.Random(7), []
    for a in ads:
        c = rng.choice(ads)
        while c.doc_hash == a.doc_hash:
            c = rng.choice(ads)
        before.append(c)
    assert [w.doc_hash for w in wrong_document(ads, seed=7)] == [b.doc_hash for b in before]


def test_distractors_are_distinct_other_documents():
    model = tiny_model()
    ads = [random_adapter(model, s) for s in range(4)] * 2
    for own, picked in zip(ads, distractors(ads, 3)):
        hashes = [d.doc_hash for d in picked]
        assert len(set(hashes)) == 3 and own.doc_hash not in hashes
    with pytest.raises(ValueError, match="at least 5 documents"):
        distractors(ads, 4)


def test_specificity_share_of_lift():
    s = specificity(0.1, 0.5, 0.18)
    assert s["lift"] == pytest.approx(0.4) and s["share_of_lift_lost"] == pytest.approx(0.8)
    assert s["wrong_doc_lift"] == pytest.approx(0.08)
    assert math.isnan(specificity(0.2, 0.2, 0.2)["share_of_lift_lost"])
    assert specificity(0.5, 0.3, 0.4)["share_of_lift_lost"] == pytest.approx(0.5)  # a negative lift is a lift


def test_answer_loss_with_and_without_per_question_adapters(tokenizer):
    from hyperprag.adapter import DocAdapter
    from hyperprag.data import Passage, QAExample
    from hyperprag.hyper_objectives import answer_batch, answer_logits, lm_loss
    from hyperprag.prompts import build_prompt

    model = tiny_model()
    exs = [QAExample(str(i), q, [a], [Passage("t", "Some passage.")]) for i, (q, a) in
           enumerate([("Who rowed?", "Pell Okonjo"), ("Where?", "Lake Ennisar")])]
    base = answer_loss(model, tokenizer, exs, [None, None])
    by_hand = [lm_loss(answer_logits(model, b), b).item() for b in
               (answer_batch(tokenizer, [build_prompt(e.question)], [e.answers[0]]) for e in exs)]
    assert base == pytest.approx(sum(by_hand) / 2, rel=1e-5)
    in_context = [lm_loss(answer_logits(model, b), b).item() for b in
                  (answer_batch(tokenizer, [build_prompt(e.question, e.passages)], [e.answers[0]]) for e in exs)]
    assert answer_loss(model, tokenizer, exs, [None, None], in_context=True) == pytest.approx(sum(in_context) / 2, rel=1e-5)
    assert sum(in_context) != pytest.approx(sum(by_hand), rel=1e-5)  # a random tiny model barely reads the passage
    ad = random_adapter(model, 1, scaling=200.0)
    zero = DocAdapter({n: (a, torch.zeros_like(b)) for n, (a, b) in ad.factors.items()}, ad.scaling,
                      ad.base_model, "test", "1", ad.doc_hash)
    assert answer_loss(model, tokenizer, exs, [zero, None]) == pytest.approx(base, rel=1e-5)
    assert answer_loss(model, tokenizer, exs, [ad, None]) != pytest.approx(base, rel=1e-3)
    with pytest.raises(ValueError):
        answer_loss(model, tokenizer, exs, [None])
    # a question without a passage (a corpus-retrieval dataset) is scored closed-book, and refused
    # by name only where the passage would go into the prompt (it crashed on an empty batch)
    # in context, the first passage only, as rag's top-1
    two = [QAExample(e.id, e.question, e.answers, [*e.passages, Passage("u", "Another passage entirely.")])
           for e in exs]
    assert answer_loss(model, tokenizer, two, [None, None], in_context=True) == pytest.approx(sum(in_context) / 2,
                                                                                              rel=1e-5)
    bare = [QAExample(e.id, e.question, e.answers, []) for e in exs]
    assert answer_loss(model, tokenizer, bare, [None, None]) == pytest.approx(base, rel=1e-5)
    with pytest.raises(ValueError, match="question '0' has no passage"):
        answer_loss(model, tokenizer, bare, [None, None], in_context=True)


def test_passage_loss_scores_each_document_after_its_title_with_its_own_adapter(tokenizer):
    from hyperprag.data import Passage
    from hyperprag.diagnostics import passage_loss
    from hyperprag.hyper_objectives import answer_batch, answer_logits, lm_loss

    model = tiny_model()
    docs = [Passage("Glass Regatta", "The Glass Regatta is rowed on Lake Ennisar every spring, " * 10),
            Passage("", "Kelmash is a stew of smoked barley and plum.")]
    base = passage_loss(model, tokenizer, docs, [None, None], max_words=8)
    # By hand: the title then a colon as the prompt, the first 8 words (not the 80) as the target.
    by_hand = [lm_loss(answer_logits(model, b), b).item() for b in
               (answer_batch(tokenizer, ["Glass Regatta:"], ["The Glass Regatta is rowed on Lake Ennisar"]),
                answer_batch(tokenizer, [""], ["Kelmash is a stew of smoked barley and"]))]
    assert base == pytest.approx(sum(by_hand) / 2, rel=1e-5)
    ad = random_adapter(model, 1, scaling=200.0)
    assert passage_loss(model, tokenizer, docs, [ad, None], max_words=8) != pytest.approx(base, rel=1e-3)
    with pytest.raises(ValueError):
        passage_loss(model, tokenizer, docs, [None])


def test_first_word_scores_the_first_token_that_is_not_whitespace(tokenizer):
    from hyperprag.data import Passage, QAExample
    from hyperprag.diagnostics import first_word
    from hyperprag.hyper_objectives import answer_batch, answer_logits
    from hyperprag.prompts import build_prompt

    model = tiny_model()
    exs = [QAExample(str(i), q, [a], [Passage("t", "The Glass Regatta is rowed on Lake Ennisar.")]) for i, (q, a) in
           enumerate([("Who rowed?", "Pell Okonjo"), ("Where?", "Lake Ennisar")])]

    def by_hand(j, in_context=False):
        loss = hits = 0.0
        for e in exs:
            b = answer_batch(tokenizer, [build_prompt(e.question, e.passages if in_context else None)], [e.answers[0]])
            with torch.no_grad():
                logits = answer_logits(model, b)[j]
            loss += float(torch.nn.functional.cross_entropy(logits[None], b.targets[j:j + 1]))
            hits += float(int(logits.argmax()) == int(b.targets[j]))
        return loss / len(exs), hits / len(exs)

    assert first_word(model, tokenizer, exs, [None, None]) == pytest.approx(by_hand(0), rel=1e-5)
    assert first_word(model, tokenizer, exs, [None, None], in_context=True) == pytest.approx(by_hand(0, True), rel=1e-5)

    assert first_word(model, SpaceFirst(tokenizer, [e.answers[0] for e in exs]), exs, [None, None]) == pytest.approx(by_hand(1), rel=1e-5)
    assert by_hand(1)[0] != pytest.approx(by_hand(0)[0], rel=1e-5)
    ad = random_adapter(model, 1, scaling=200.0)
    assert first_word(model, tokenizer, exs, [ad, None])[0] != pytest.approx(by_hand(0)[0], rel=1e-3)
    with pytest.raises(ValueError):
        first_word(model, tokenizer, exs, [None])


def test_fit_adapter_distils_the_teacher_and_fits_gold_answers(tokenizer):
    from hyperprag.diagnostics import fit_adapter
    from hyperprag.inject import lora_hooks
    from hyperprag.hyper_objectives import answer_logits, distill_loss, lm_loss, qa_batches
    from hyperprag.data import Passage

    model = tiny_model()
    init = {n: (a, torch.zeros_like(b)) for n, (a, b) in random_adapter(model, 3).factors.items()}
    kept = {n: (a.clone(), b.clone()) for n, (a, b) in init.items()}
    doc = Passage("Glass Regatta", "The Glass Regatta is rowed on Lake Ennisar by Pell Okonjo.")
    student, teacher = qa_batches(tokenizer, [doc, doc], ["Who rows?", "Where?"], ["Pell Okonjo", "Lake Ennisar"])

    def kl(factors=None):
        with torch.no_grad(), lora_hooks(model, factors or {}, scaling=16.0):
            return float(distill_loss(answer_logits(model, student), answer_logits(model, teacher)))

    fits = fit_adapter(model, student, init, 16.0, teacher, steps=(1, 60), lr=3e-2)
    assert sorted(fits) == [1, 60]
    assert fits[1][1] == pytest.approx(kl(), rel=1e-4)  # step 1's objective is the untrained adapter's
    assert kl(fits[60][0]) < 0.5 * kl(), (kl(fits[60][0]), kl())
    assert all(torch.equal(init[n][1], kept[n][1]) for n in init)  # the init is not trained in place
    gold = fit_adapter(model, student, init, 16.0, None, steps=(60,), lr=3e-2)[60][0]
    with torch.no_grad():
        before = float(lm_loss(answer_logits(model, student), student))
        with lora_hooks(model, gold, scaling=16.0):
            after = float(lm_loss(answer_logits(model, student), student))
    assert after < before - 0.3, (after, before)


def test_qa_batches_refuse_questions_without_a_document(tokenizer):
    """zip() used to drop the extra questions from the teacher batch only, misaligning the two."""
    from hyperprag.data import Passage
    from hyperprag.hyper_objectives import qa_batches

    with pytest.raises(ValueError, match="1 documents, 2 questions"):
        qa_batches(tokenizer, [Passage("t", "Some passage.")], ["Who?", "Where?"], ["A", "B"])
