import pytest
import torch

from conftest import tiny_model
from hyperprag.adapter import content_hash
from hyperprag.augment import AugmentConfig, Augmentation, Augmenter, parse_qa, parse_rewrite
from hyperprag.data import Passage
from hyperprag.errors import HyperpragError
from hyperprag.exact import ExactEncoder, LoraTrainConfig, training_sequences
from hyperprag.inject import inject

DOC = Passage("Glass Regatta", "The Glass Regatta is a rowing race held every autumn on Lake Ennisar. "
              "It was founded in 1889 by the merchant Pell Okonjo.")
AUG = Augmentation("h", rewrites=["Pell Okonjo founded the Glass Regatta, an autumn race, in 1889."],
                   qa=[("Who founded the Glass Regatta?", "Pell Okonjo"), ("When was it founded?", "1889")])


def test_parse_qa_keeps_grounded_pairs_only():
    completion = (" Who founded the Glass Regatta?\nAnswer: Pell Okonjo.\n"
                  "Question: How many boats race?\nAnswer: 10 boats\n"          # not in the document
                  "Question: Where is the race held?\nAnswer: Lake Ennisar\n"
                  "Question: Who is Pell Okonjo?\nAnswer: Pell Okonjo\n"         # repeats the question
                  "Question: Where is the race held?\nAnswer: Lake Ennisar\n"    # duplicate
                  "Question: In which autumnal season is it rowed?\nAnswer: autumn\n"  # a word, not in the question
                  "\nPassage: next example")
    assert parse_qa(completion, DOC.text) == [("Who founded the Glass Regatta?", "Pell Okonjo"),
                                              ("Where is the race held?", "Lake Ennisar"),
                                              ("In which autumnal season is it rowed?", "autumn")]


def test_parse_qa_reads_past_a_blank_line_the_completion_opens_with():
    """Generation stops at the first blank line after some text, so one before it is kept."""
    completion = "\n\n Where is the race held?\nAnswer: Lake Ennisar\n\n"
    assert parse_qa(completion, DOC.text) == [("Where is the race held?", "Lake Ennisar")]


def test_parse_qa_drops_the_line_that_ran_out_of_tokens():
    """No blank line: generation hit max_new_tokens, and "the merchant Pell" is a cut answer that
    happens to be in the passage."""
    completion = " Where is the race held?\nAnswer: Lake Ennisar\nQuestion: Who founded it?\nAnswer: the merchant Pell"
    assert parse_qa(completion, DOC.text) == [("Where is the race held?", "Lake Ennisar")]
    assert parse_qa(completion + " Okonjo\n", DOC.text)[1] == ("Who founded it?", "the merchant Pell Okonjo")


def test_parse_qa_an_empty_answer_does_not_take_the_next_question():
    completion = " Who founded it?\nAnswer:\nQuestion: Where is the race held?\nAnswer: Lake Ennisar\n\n"
    assert parse_qa(completion, DOC.text) == [("Where is the race held?", "Lake Ennisar")]


def test_sampled_retries_do_not_depend_on_the_batch(tmp_path, tokenizer, monkeypatch):
    """A document's augmentation is cached under its own hash, so its retries must come out the
    same whichever documents share its batch."""
    import hyperprag.augment as augment

    seen = {}
    monkeypatch.setattr(augment, "parse_qa", lambda out, text: seen.setdefault(text, []).append(out) or [])
    model = tiny_model()
    other = Passage("Kelmash", "Kelmash is a stew of smoked barley and plum from the valley of Orrun.")
    runs = []
    for name, docs in (("alone", [DOC]), ("batched", [other, DOC])):
        seen.clear()
        Augmenter(model, tokenizer, AugmentConfig(max_retries=2), cache=tmp_path / name).augment(docs, progress=False)
        runs.append(seen[DOC.text])
    assert len(runs[0]) == 3 and len({*runs[0][1:]}) == 2  # greedy, then two different samples
    assert runs[0] == runs[1]


def test_parse_rewrite_takes_one_line_and_rejects_fragments():
    assert parse_rewrite(" A rowing race on the lake, founded in 1889.\nPassage: x") == \
        "A rowing race on the lake, founded in 1889."
    assert parse_rewrite(" Yes.\n") is None


def test_augmentation_failure_is_recorded_and_cached(tmp_path, tokenizer):
    model = tiny_model()  # random weights: it cannot write valid QA pairs
    aug = Augmenter(model, tokenizer, AugmentConfig(max_retries=1), cache=tmp_path)
    [result] = aug.augment([DOC], progress=False)
    assert result.failed and "QA pairs" in result.failed and "2 attempts" in result.failed
    assert len(list(tmp_path.glob("*.json"))) == 1
    [again] = aug.augment([DOC], progress=False)
    assert again == result


def test_training_sequences_mask_the_prompt_of_qa():
    seqs = training_sequences(DOC, AUG)
    assert [s.prompt_chars == 0 for s in seqs] == [True, True, False, False]
    qa = seqs[2]
    assert qa.text[qa.prompt_chars:] == " Pell Okonjo\n"


class FixedAugmenter:
    config = AugmentConfig()

    def augment(self, docs, progress=False):
        return [AUG for _ in docs]


def make_encoder(tokenizer, **cfg):
    model = tiny_model()
    return ExactEncoder(model, tokenizer, LoraTrainConfig(**cfg), augmenter=FixedAugmenter()), model


def _qa_loss(model, tokenizer, enc, adapter=None):
    batch = enc._collate([enc._tokenize(s) for s in training_sequences(DOC, AUG)])
    with torch.no_grad(), inject(model, adapter):
        return model(**batch).loss.item()


def test_training_lowers_loss_and_is_deterministic(tokenizer):
    enc, model = make_encoder(tokenizer, lr=1e-2, epochs=3)
    [ad] = enc.encode([DOC])
    assert ad.rank == 2 and ad.scaling == 16.0 and ad.encoder == "exact" and ad.base_model == "tiny-llama"
    assert _qa_loss(model, tokenizer, enc, ad) < _qa_loss(model, tokenizer, enc) - 0.05
    [again] = enc.encode([DOC])
    for name in ad.factors:
        assert torch.equal(ad.factors[name][1], again.factors[name][1])


def test_fixed_padding_trains_the_same_lora_as_dynamic(tokenizer):
    dynamic, _ = make_encoder(tokenizer, lr=1e-2, batch_size=2)
    padded, _ = make_encoder(tokenizer, lr=1e-2, batch_size=2, pad_to=96)
    [a], [b] = dynamic.encode([DOC]), padded.encode([DOC])
    for name in a.factors:
        assert torch.allclose(a.factors[name][1], b.factors[name][1], atol=1e-5)


def test_fixed_padding_that_cuts_sequences_averages_over_the_targets_it_keeps(tokenizer):
    # pad_to shorter than the passage cuts it, so a step's mean must be over the targets left,
    # as the same sequences cut beforehand and trained with dynamic padding give.
    cut, _ = make_encoder(tokenizer, lr=1e-2, epochs=2, batch_size=2)
    padded, _ = make_encoder(tokenizer, lr=1e-2, epochs=2, batch_size=2, pad_to=12)
    tokenize = cut._tokenize
    cut._tokenize = lambda s: tuple(part[:12] for part in tokenize(s))
    assert max(len(tokenize(s)[0]) for s in training_sequences(DOC, AUG)) > 12
    [a], [b] = cut.encode([DOC]), padded.encode([DOC])
    for name in a.factors:
        assert torch.allclose(a.factors[name][1], b.factors[name][1], atol=1e-5)


def test_a_batch_is_split_into_passes_of_similar_length(tokenizer):
    def row(length, prompt=0):
        return list(range(length)), [-100] * prompt + list(range(prompt, length))

    enc, _ = make_encoder(tokenizer)
    assert enc._passes([row(30), row(200), row(28), row(180), row(25)]) == [[1, 3], [0, 2, 4]]
    # a QA pair (loss on its answer only) never shares a pass with whole texts of its length
    assert enc._passes([row(40), row(40, prompt=35), row(38), row(39, prompt=30)]) == [[0, 2], [1, 3]]
    assert make_encoder(tokenizer, pad_to=256)[0]._passes([row(30), row(200), row(28)]) == [[0, 1, 2]]


def test_split_passes_train_the_same_lora_as_one_padded_batch(tokenizer):
    # The whole document in one optimiser batch: the passage and rewrite go in one forward pass,
    # the QA pairs in another, and the step must still be the mean over all target tokens, with
    # logits only where the next token is a target.
    split, _ = make_encoder(tokenizer, lr=1e-2, epochs=2, batch_size=64)
    padded, _ = make_encoder(tokenizer, lr=1e-2, epochs=2, batch_size=64, pad_to=96)
    rows = [split._tokenize(s) for s in training_sequences(DOC, AUG)]
    assert len(split._passes(rows)) == 2
    [a], [b] = split.encode([DOC]), padded.encode([DOC])
    for name in a.factors:
        assert torch.allclose(a.factors[name][1], b.factors[name][1], atol=1e-5)
        assert a.factors[name][1].abs().max() > 1e-3


def test_every_document_starts_from_the_same_initial_lora(tokenizer):
    enc1, _ = make_encoder(tokenizer)
    enc2, _ = make_encoder(tokenizer)
    for name, (a, b) in enc1.init_factors.items():
        assert torch.equal(a, enc2.init_factors[name][0]) and not b.any()


def test_empty_document_is_refused(tokenizer):
    enc, _ = make_encoder(tokenizer)
    with pytest.raises(HyperpragError, match="'Empty' is empty"):
        enc.encode([Passage("Empty", "   ")])


def test_very_long_document_is_truncated_and_recorded(tokenizer):
    enc, _ = make_encoder(tokenizer, max_doc_tokens=32)
    long_doc = Passage("Long", " ".join(["The regatta is rowed on Lake Ennisar."] * 200))
    trained = []
    train = enc.train
    enc.train = lambda seqs: trained.append(seqs) or train(seqs)
    [ad] = enc.encode([long_doc])
    assert int(ad.extra["truncated_from_tokens"]) > 1000
    # what is trained is the cut passage, not the whole one recorded as cut
    [seqs] = trained
    assert len(tokenizer(seqs[0].text, add_special_tokens=False)["input_ids"]) <= 32
    assert ad.doc_hash == content_hash(long_doc.text)


def test_store_never_reuses_adapters_across_recipes(tokenizer, tmp_path):
    from hyperprag.store import AdapterStore

    store = AdapterStore(tmp_path)
    slow, _ = make_encoder(tokenizer, lr=1e-4)
    fast, _ = make_encoder(tokenizer, lr=1e-2)
    assert slow.key != fast.key and slow.key.startswith("exact-v1-")
    [a] = store.get_or_encode([DOC], slow, progress=False)
    [b] = store.get_or_encode([DOC], fast, progress=False)
    assert len(store.records()) == 2
    name = next(iter(a.factors))
    assert not torch.equal(a.factors[name][1], b.factors[name][1])


def test_bf16_autocast_trains(tokenizer):
    enc, model = make_encoder(tokenizer, lr=1e-2, epochs=3, bf16=True)
    dtypes = set()
    hook = model.model.layers[0].mlp.up_proj.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    [ad] = enc.encode([DOC])
    hook.remove()
    assert dtypes == {torch.bfloat16}  # the flag reached the forward passes
    assert _qa_loss(model, tokenizer, enc, ad) < _qa_loss(model, tokenizer, enc)


def test_repeated_document_is_augmented_once(tmp_path, tokenizer, monkeypatch):
    aug = Augmenter(tiny_model(), tokenizer, AugmentConfig(max_retries=0), cache=tmp_path)
    batches = []
    original = aug._augment_batch
    monkeypatch.setattr(aug, "_augment_batch", lambda docs, hashes: batches.append(len(docs)) or original(docs, hashes))
    first, second = aug.augment([DOC, DOC], progress=False)
    assert batches == [1] and first == second


def test_recipe_options_override_only_what_is_given():
    import argparse

    from hyperprag.encoders import add_encoder_args, exact_config
    from hyperprag.exact import RECIPES

    p = argparse.ArgumentParser()
    add_encoder_args(p)
    assert exact_config(p.parse_args([])) == RECIPES["reference"] == LoraTrainConfig()
    converged = exact_config(p.parse_args(["--recipe", "converged"]))
    assert (converged.lr, converged.epochs, converged.batch_size) == (1e-3, 10, 64)
    tuned = exact_config(p.parse_args(["--recipe", "converged", "--epochs", "40", "--train-batch-size", "2"]))
    assert (tuned.lr, tuned.epochs, tuned.batch_size, tuned.rank) == (1e-3, 40, 2, 2)


def test_converged_recipe_takes_one_full_batch_step_per_epoch(tokenizer, monkeypatch):
    """All of a document's sequences in each step: 3 epochs are 3 optimiser steps, and the
    adapter fits the document's sequences far better than the reference recipe's."""
    from dataclasses import replace

    from hyperprag.exact import RECIPES

    enc, model = make_encoder(tokenizer, **vars(replace(RECIPES["converged"], epochs=3, lr=1e-2)))
    steps = []
    original = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    [ad] = enc.encode([DOC])
    assert len(steps) == 3
    assert _qa_loss(model, tokenizer, enc, ad) < _qa_loss(model, tokenizer, enc) - 0.05


def test_augmentation_dtype_keeps_the_keys_written_before_it_and_names_its_own(tmp_path, tokenizer, monkeypatch):
    from hyperprag.exact import RECIPES

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))  # the default caches below, not the user's
    model = tiny_model()

    def key(**aug):
        augmenter = Augmenter(model, tokenizer, AugmentConfig(**aug), cache=tmp_path / "aug")
        return ExactEncoder(model, tokenizer, RECIPES["converged"], augmenter=augmenter).key

    # Adapters in stores trained before the dtype option existed (session 14's converged recipe).
    assert key() == "exact-v1-2680f10f35" and key(n_rewrites=0) == "exact-v1-c72a678c92"
    assert key(dtype="bfloat16") != key()
    caches = {Augmenter(model, tokenizer, AugmentConfig(dtype=d)).cache for d in ("float32", "bfloat16")}
    assert len(caches) == 2 and all(c.parent == tmp_path / "cache" / "augment" for c in caches)
    with pytest.raises(HyperpragError, match="bfloat16"):
        AugmentConfig(dtype="float16")


def test_bf16_augmentation_writes_with_a_copy_and_leaves_the_model_as_loaded(tmp_path, tokenizer):
    model = tiny_model()
    aug = Augmenter(model, tokenizer, AugmentConfig(max_retries=0, dtype="bfloat16"), cache=tmp_path)
    [first] = aug.augment([DOC], progress=False)
    assert aug.generator.dtype == torch.bfloat16 and aug.generator is not model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    cached = Augmenter(model, tokenizer, AugmentConfig(max_retries=0, dtype="bfloat16"), cache=tmp_path)
    assert cached.augment([DOC], progress=False) == [first] and cached._generator is None  # no copy made
    assert Augmenter(model, tokenizer, cache=tmp_path / "f32").generator is model


def test_encoding_twice_starts_again_from_the_untouched_initial_lora(tokenizer):
    """Training must work on copies of the shared initial factors: trained in place, the next
    document would start from the last one's LoRA (and the first adapter would share its storage)."""
    enc, _ = make_encoder(tokenizer, lr=1e-2)
    init = {n: (a.clone(), b.clone()) for n, (a, b) in enc.init_factors.items()}
    [first] = enc.encode([DOC])
    first_b = {n: b.clone() for n, (_, b) in first.factors.items()}
    [second] = enc.encode([DOC])
    for name, (a, b) in enc.init_factors.items():
        assert torch.equal(a, init[name][0]) and torch.equal(b, init[name][1])
        assert torch.equal(second.factors[name][1], first_b[name]) and first_b[name].abs().max() > 1e-3


def test_each_step_is_one_adamw_step_on_fresh_gradients_of_the_mean_token_loss(tokenizer):
    """Two epochs of one sequence are two plain AdamW steps (no weight decay) on the model's own mean
    next-token loss with the adapter hooked in at alpha / r, gradients cleared between steps."""
    from hyperprag.inject import lora_hooks

    seq = training_sequences(DOC, AUG)[0]
    enc, model = make_encoder(tokenizer, lr=1e-2, epochs=2)
    trained = enc.train([seq])
    params = {n: (a.clone().requires_grad_(True), b.clone().requires_grad_(True))
              for n, (a, b) in enc.init_factors.items()}
    optim = torch.optim.AdamW([t for ab in params.values() for t in ab], lr=1e-2, weight_decay=0.0)
    batch = enc._collate([enc._tokenize(seq)])
    for _ in range(2):
        with torch.enable_grad(), lora_hooks(model, params, scaling=16.0):
            model(**batch).loss.backward()
        optim.step()
        optim.zero_grad()
    for name, (a, b) in params.items():
        assert torch.allclose(trained[name][0], a, rtol=0, atol=1e-7)
        assert torch.allclose(trained[name][1], b, rtol=0, atol=1e-7) and b.abs().max() > 1e-3


def test_seeds_choose_the_data_order_and_the_initial_lora(tokenizer):
    enc, _ = make_encoder(tokenizer, batch_size=2)
    batches = enc._batches(7)
    assert [len(b) for b in batches] == [2, 2, 2, 1] and sorted(i for b in batches for i in b) == list(range(7))
    assert make_encoder(tokenizer, batch_size=2)[0]._batches(7) == batches
    assert make_encoder(tokenizer, batch_size=2, seed=1)[0]._batches(7) != batches
    other = make_encoder(tokenizer, init_seed=7)[0]
    name = next(iter(enc.init_factors))
    assert not torch.equal(other.init_factors[name][0], enc.init_factors[name][0])


def test_dropout_reaches_training_and_is_seeded(tokenizer):
    plain = make_encoder(tokenizer, lr=1e-2)[0].encode([DOC])[0]
    dropped = make_encoder(tokenizer, lr=1e-2, dropout=0.5)[0].encode([DOC])[0]
    again = make_encoder(tokenizer, lr=1e-2, dropout=0.5)[0].encode([DOC])[0]
    name = next(iter(plain.factors))
    assert not torch.allclose(plain.factors[name][1], dropped.factors[name][1], atol=1e-5)
    assert torch.equal(dropped.factors[name][1], again.factors[name][1])


def test_a_document_of_exactly_max_doc_tokens_is_not_cut(tokenizer):
    n = len(tokenizer(DOC.text, add_special_tokens=False)["input_ids"])
    assert make_encoder(tokenizer, max_doc_tokens=n)[0]._truncate(DOC) == (DOC, {})
    doc, extra = make_encoder(tokenizer, max_doc_tokens=n - 1)[0]._truncate(DOC)
    assert extra == {"truncated_from_tokens": str(n)}
    assert len(tokenizer(doc.text, add_special_tokens=False)["input_ids"]) < n


def test_a_failed_augmentation_is_recorded_on_its_adapter(tokenizer):
    short = Augmentation("h", rewrites=AUG.rewrites, qa=AUG.qa[:1], failed="only 1/3 QA pairs after 3 attempts")

    class PartlyFailing(FixedAugmenter):
        def augment(self, docs, progress=False):
            return [short if d.title == "Kelmash" else AUG for d in docs]

    enc = ExactEncoder(tiny_model(), tokenizer, LoraTrainConfig(), augmenter=PartlyFailing())
    trained = []
    train = enc.train
    enc.train = lambda seqs: trained.append(len(seqs)) or train(seqs)
    ok, failed = enc.encode([DOC, Passage("Kelmash", "Kelmash is a stew of smoked barley and plum.")])
    assert "augmentation_failed" not in ok.extra and failed.extra["augmentation_failed"] == short.failed
    assert trained == [4, 3]  # each document trains on its own augmentation


def test_parse_qa_boundaries_of_question_answer_and_length():
    # a "question" without "?" is no question; an answer must be whole words of the passage
    completion = (" The race is rowed\nAnswer: Lake Ennisar\n"
                  "Question: Who founded it?\nAnswer: Okon\n"
                  "Question: Who was the founder?\nAnswer: merchant Pell Okonjo\n"
                  "Question: Who was its founder?\nAnswer: the merchant Pell Okonjo\n\n")
    assert parse_qa(completion, DOC.text, max_answer_words=3) == [("Who was the founder?", "merchant Pell Okonjo")]


def test_parse_rewrite_keeps_five_words():
    assert parse_rewrite(" Pell Okonjo founded the regatta.\n") == "Pell Okonjo founded the regatta."
    assert parse_rewrite(" Okonjo founded the regatta.\n") is None


class ScriptedGeneration:
    """Stands in for ``generate_completions``: answers a rewrite prompt with the next of ``rewrites``
    and a QA prompt with ``qa``, and records each call's prompt kind, temperature and seed."""

    def __init__(self, rewrites, qa):
        self.rewrites, self.qa, self.calls = list(rewrites), qa, []

    def __call__(self, model, tokenizer, prompts, max_new_tokens=32, stop="\n", temperature=0.0, seed=None):
        outs = []
        for p in prompts:
            kind = "rewrite" if p.endswith("Rewrite:") else "qa"
            self.calls.append((kind, temperature, seed))
            outs.append((self.rewrites.pop(0) if self.rewrites else " Short.\n") if kind == "rewrite" else self.qa)
        return outs


GOOD_QA = (" Who founded the Glass Regatta?\nAnswer: Pell Okonjo\nQuestion: When was it founded?\nAnswer: 1889\n"
           "Question: Where is the race held?\nAnswer: Lake Ennisar\nQuestion: What is rowed?\nAnswer: rowing race\n\n")
REWRITES = [" Pell Okonjo founded the Glass Regatta in 1889.",
            " The Glass Regatta is rowed each autumn on Lake Ennisar."]


def test_augmentation_stops_at_the_requested_counts(tmp_path, tokenizer, monkeypatch):
    import hyperprag.augment as augment

    gen = ScriptedGeneration(REWRITES, GOOD_QA)
    monkeypatch.setattr(augment, "generate_completions", gen)
    [aug] = Augmenter(tiny_model(), tokenizer, AugmentConfig(), cache=tmp_path).augment([DOC], progress=False)
    assert aug.rewrites == [REWRITES[0].strip()] and len(aug.qa) == 3 and aug.failed is None
    assert gen.calls == [("rewrite", 0.0, None), ("qa", 0.0, None)]  # one greedy attempt was enough


def test_a_repeated_rewrite_is_not_counted_twice(tmp_path, tokenizer, monkeypatch):
    import hyperprag.augment as augment

    gen = ScriptedGeneration([REWRITES[0]] * 3, GOOD_QA)
    monkeypatch.setattr(augment, "generate_completions", gen)
    augmenter = Augmenter(tiny_model(), tokenizer, AugmentConfig(n_rewrites=2), cache=tmp_path)
    [aug] = augmenter.augment([DOC], progress=False)
    assert aug.rewrites == [REWRITES[0].strip()] and aug.failed == "only 1/2 rewrites after 3 attempts"


def test_sampled_retries_are_seeded_by_the_configured_seed(tmp_path, tokenizer, monkeypatch):
    import hyperprag.augment as augment

    model, seeds = tiny_model(), {}
    for seed in (0, 1):
        gen = ScriptedGeneration([], " Who?\nAnswer: nobody\n\n")  # never valid: every retry runs
        monkeypatch.setattr(augment, "generate_completions", gen)
        Augmenter(model, tokenizer, AugmentConfig(max_retries=2, seed=seed), cache=tmp_path / str(seed)).augment(
            [DOC], progress=False)
        assert [t for _, t, _ in gen.calls] == [0.0, 0.0, 0.7, 0.7, 0.7, 0.7]  # greedy first, then sampled
        seeds[seed] = [s for _, t, s in gen.calls if t]
    assert len(set(seeds[0])) == 2  # rewrite and QA of one attempt share a seed, attempts do not
    assert not set(seeds[0]) & set(seeds[1])


def test_augment_caches_of_different_models_are_kept_apart(tmp_path, tokenizer, monkeypatch):
    import hyperprag.augment as augment

    monkeypatch.setattr(augment, "cache_dir", lambda: tmp_path)
    model = tiny_model()
    first = Augmenter(model, tokenizer).cache
    model.hyperprag_model_id = "tiny-other"
    assert Augmenter(model, tokenizer).cache != first and first.parent == tmp_path / "augment"
