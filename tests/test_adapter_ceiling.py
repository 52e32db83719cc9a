"""benchmarks/adapter_ceiling.py: which questions each per-document adapter is trained on and scored on."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from adapter_ceiling import VARIANTS, folds, own_other, training_batches  # noqa: E402

from hyperprag.augment import Augmentation  # noqa: E402
from hyperprag.data import Passage, QAExample  # noqa: E402

DOC = Passage("Glass Regatta", "The Glass Regatta is rowed on Lake Ennisar by Pell Okonjo every spring.")
QS = [QAExample(str(i), f"Question {i}?", [f"answer {i}"], [DOC]) for i in range(5)]


class FakeAugmenter:
    def augment(self, docs, progress=False):
        return [Augmentation("h", ["A rewrite of the passage, keeping every fact."], [("Who rows?", "Pell Okonjo")])]


def test_folds_score_every_question_once_with_an_adapter_that_never_saw_it():
    assert folds(QS, "own") == [(QS, QS)]
    pairs = folds(QS, "fold")
    scored = [q.id for _, s in pairs for q in s]
    assert sorted(scored) == sorted(q.id for q in QS)
    for train, s in pairs:
        assert train and not {q.id for q in train} & {q.id for q in s}
    assert folds(QS[:1], "fold") == [([], QS[:1])]  # nothing else to train on


def test_training_batches_per_variant(tokenizer):
    aug = FakeAugmenter()
    student, teacher = training_batches(tokenizer, QS[:2], QS[2:], VARIANTS["fold-kl"], aug)
    assert student.input_ids.shape[0] == teacher.input_ids.shape[0] == 2
    assert "answer 0" in tokenizer.decode(student.input_ids[0])
    assert "lake ennisar" in tokenizer.decode(teacher.input_ids[0]) and "lake ennisar" not in tokenizer.decode(student.input_ids[0])
    student, teacher = training_batches(tokenizer, QS, QS, VARIANTS["self-kl"], aug)
    assert student.input_ids.shape[0] == 1 and "okonjo" in tokenizer.decode(student.input_ids[0]).lower()
    student, teacher = training_batches(tokenizer, QS, QS, VARIANTS["self-lm"], aug)
    assert teacher is None and student.input_ids.shape[0] == 3  # passage, rewrite, one QA pair
    assert training_batches(tokenizer, [], QS, VARIANTS["fold-kl"], aug) is None


def test_own_other_separates_the_same_paragraph_from_the_rest():
    import torch

    sim = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.5, 0.1], [0.4, 0.0, 0.3]])
    own, other, best = own_other(sim)
    assert abs(own - (0.9 + 0.5 + 0.3) / 3) < 1e-6 and abs(other - 1.1 / 6) < 1e-6
    assert best == 2  # the third row's own (0.3) loses to 0.4
