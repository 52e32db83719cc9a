"""benchmarks/focused_passages.py: passages are cut to the question's sentences, in order, and
runs that would put the cut passages in a prompt are refused."""
import sys
from pathlib import Path

import pytest

from hyperprag.data import Passage, QAExample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import focused_passages  # noqa: E402
from focused_passages import focus, focused_retrieve_all, split_sentences  # noqa: E402

PASSAGE = Passage(title="Quillon Bay", id="p1", text=(
    "Quillon Bay is a fishing town on the Marrow coast. Its harbour was dredged in 1911 by Tamsin Orle. "
    "The town's lighthouse is painted green. Every spring the town holds a kelp festival."))


def test_split_sentences_at_full_stops_before_capitals_and_digits():
    assert split_sentences("One fact. 1911 was a year. Dr. no split? Yes! end") == [
        "One fact.", "1911 was a year.", "Dr. no split?", "Yes! end"]


def test_focus_keeps_the_best_matching_sentences_in_the_passage_order():
    one = focus(PASSAGE, "What colour is the lighthouse painted?", 1)
    assert one == Passage("Quillon Bay", "The town's lighthouse is painted green.", "p1")
    two = focus(PASSAGE, "Who dredged the harbour, and what festival is held?", 2)
    assert two.text == ("Its harbour was dredged in 1911 by Tamsin Orle. "
                        "Every spring the town holds a kelp festival.")


def test_short_passages_and_questions_sharing_no_word_keep_their_first_sentences():
    assert focus(PASSAGE, "anything", 4) == PASSAGE
    assert focus(PASSAGE, "zzz qqq", 1).text == "Quillon Bay is a fishing town on the Marrow coast."


def test_retrieval_is_cut_per_question(monkeypatch):
    monkeypatch.setattr(focused_passages.evaluate_module, "retrieve_all",
                        lambda examples, *a, **kw: [[PASSAGE] for _ in examples])
    examples = [QAExample("1", "What colour is the lighthouse?", ["green"]),
                QAExample("2", "Who dredged the harbour?", ["Tamsin Orle"])]
    cut = focused_retrieve_all(1)(examples, 3)
    assert [ps[0].text for ps in cut] == ["The town's lighthouse is painted green.",
                                          "Its harbour was dredged in 1911 by Tamsin Orle."]


@pytest.mark.parametrize("command", [["bench", "--data", "x.jsonl"],
                                     ["bench", "--data", "x.jsonl", "--modes", "closed", "rag"],
                                     ["eval", "--data", "x.jsonl", "--mode", "hyper-combine"]])
def test_modes_that_read_passages_are_refused(command, capsys):
    with pytest.raises(SystemExit) as exc:
        focused_passages.main(["--", *command])
    assert exc.value.code == 2
    assert "closed, hyper" in capsys.readouterr().err
