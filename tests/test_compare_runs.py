"""benchmarks/compare_runs.py: bench runs compared question by question."""
import json
import sys
from pathlib import Path

import pytest

from hyperprag.metrics import paired_bootstrap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_runs import compare, per_question_f1  # noqa: E402


def write_run(path: Path, f1: dict[str, float]) -> Path:
    preds = [{"id": i, "prediction": "x", "f1": v} for i, v in f1.items()]
    path.write_text(json.dumps({"datasets": {"squad": {"predictions": {"prag": preds}}}}))
    return path


def test_paired_difference_follows_the_question_ids_not_the_order(tmp_path):
    a = per_question_f1(write_run(tmp_path / "a.json", {"q1": 0.0, "q2": 1.0, "q3": 0.5}), "squad", "prag")
    b = per_question_f1(write_run(tmp_path / "b.json", {"q3": 0.5, "q2": 1.0, "q1": 1.0}), "squad", "prag")
    # the interval depends on the pairing (the mean does not): it is the one of id-aligned lists
    assert compare(a, b) == paired_bootstrap([1.0, 1.0, 0.5], [0.0, 1.0, 0.5])
    assert compare(a, b) != paired_bootstrap([0.5, 1.0, 1.0], [0.0, 1.0, 0.5])


def test_runs_on_different_questions_or_missing_modes_are_refused(tmp_path):
    a = per_question_f1(write_run(tmp_path / "a.json", {"q1": 0.0}), "squad", "prag")
    b = per_question_f1(write_run(tmp_path / "b.json", {"q2": 0.0}), "squad", "prag")
    with pytest.raises(SystemExit, match="different questions"):
        compare(a, b)
    with pytest.raises(SystemExit, match="no mode 'hyper'"):
        per_question_f1(tmp_path / "a.json", "squad", "hyper")
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"datasets": {"squad": {"predictions": {"prag": [
        {"id": "q1", "prediction": "x", "f1": 1.0}, {"id": "q1", "prediction": "y", "f1": 0.0}]}}}}))
    with pytest.raises(SystemExit, match="question 'q1' is listed twice"):
        per_question_f1(twice, "squad", "prag")
    with pytest.raises(SystemExit, match="none.json: no such results.json"):
        per_question_f1(tmp_path / "none.json", "squad", "prag")


def test_a_work_directory_gives_the_modes_only_its_answer_files_hold(tmp_path):
    """The wrong-document ablation is not in results.json's predictions, only in work/."""
    work = tmp_path / "work"
    work.mkdir()
    rows = [{"id": "q1", "f1": 0.25}, {"id": "q2", "f1": 1.0}]
    (work / "answers-squad-hyper-wrongdoc-0123456789ab.jsonl").write_text("\n".join(map(json.dumps, rows)))
    (work / "answers-squad-hyper-0123456789ab.jsonl").write_text(json.dumps({"id": "q1", "f1": 0.0}))
    assert per_question_f1(work, "squad", "hyper-wrongdoc") == {"q1": 0.25, "q2": 1.0}
    with pytest.raises(SystemExit, match="expected one answer file"):
        per_question_f1(work, "squad", "prag")
