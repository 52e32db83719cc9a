"""The answer-kind breakdown in benchmarks/answer_kinds.py: which questions count as yes/no or
"A or B", and when a prediction names one option."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from answer_kinds import kind, picked_option  # noqa: E402


def row(question, answers, prediction=""):
    return {"question": question, "answers": answers, "prediction": prediction}


def test_kinds():
    assert kind(row("Are both X River and Y River in the same country?", ["yes"])) == "yes/no"
    assert kind(row("Is Lake Orva deeper than Lake Tern?", ["No"])) == "yes/no"
    assert kind(row("Which film came out first, Pearl Lust or On Body And Soul?", ["Pearl Lust"])) == "A or B"
    assert kind(row("Was Jamie Curry or Alyaksey Vasilewski born first?", ["Alyaksey Vasilewski"])) == "A or B"
    assert kind(row("Where was the father of Tony Bettenhausen Jr. born?", ["Tinley Park"])) == "other"


def test_picked_option():
    q = "Which film came out first, On Body And Soul or Pearl Lust?"
    assert picked_option(row(q, [], "Pearl Lust")) == "Pearl Lust"
    assert picked_option(row(q, [], "On Body and Soul was released in 1947")) == "On Body And Soul"
    assert picked_option(row(q, [], "Orla Fenwick")) is None
    assert picked_option(row(q, [], "On Body And Soul or Pearl Lust")) is None  # both named: no pick
    q = "Was Jamie Curry or Alyaksey Vasilewski born first?"
    assert picked_option(row(q, [], "Alyaksey Vasilewski")) == "Alyaksey Vasilewski born first"


def test_answer_files_are_read_a_row_a_line_whatever_the_predictions_hold(tmp_path):
    """The bench writes rows unescaped: a U+2028 or U+0085 in a prediction is not a line break."""
    import json

    from answer_kinds import answers

    rows = [{"id": "q0", "prediction": "Paris\u2028France", "f1": 1.0}, {"id": "q1", "prediction": "x\x85y", "f1": 0.0}]
    (tmp_path / "answers-squad-hyper-0123456789ab.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    got = answers(tmp_path, "squad", "hyper")
    assert list(got) == ["q0", "q1"] and got["q0"]["prediction"] == "Paris\u2028France"
