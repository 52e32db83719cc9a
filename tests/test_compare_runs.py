"""benchmarks/compare_runs.py: bench runs compared question by question."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_runs import compare, per_question_f1, pooled_f1  # noqa: E402


def write_run(path: Path, f1: dict[str, float], dataset: str = "squad") -> Path:
    preds = [{"id": i, "prediction": "x", "f1": v} for i, v in f1.items()]
    path.write_text(json.dumps({"datasets": {dataset: {"predictions": {"prag": preds}}}}))
    return path


def test_paired_difference_follows_the_question_ids_not_the_order(tmp_path):
    a = per_question_f1(write_run(tmp_path / "a.json", {"q1": 0.0, "q2": 1.0, "q3": 0.5}), "squad", "prag")
    b = per_question_f1(write_run(tmp_path / "b.json", {"q3": 0.5, "q2": 1.0, "q1": 1.0}), "squad", "prag")
    mean, lo, hi = compare(a, b)
    assert mean == pytest.approx(1 / 3) and lo <= mean <= hi


def test_runs_on_different_questions_or_missing_modes_are_refused(tmp_path):
    a = per_question_f1(write_run(tmp_path / "a.json", {"q1": 0.0}), "squad", "prag")
    b = per_question_f1(write_run(tmp_path / "b.json", {"q2": 0.0}), "squad", "prag")
    with pytest.raises(SystemExit, match="different questions"):
        compare(a, b)
    with pytest.raises(SystemExit, match="no mode 'hyper'"):
        per_question_f1(tmp_path / "a.json", "squad", "hyper")
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


def test_runs_answered_in_pieces_are_pooled_and_each_question_counted_once(tmp_path):
    a = write_run(tmp_path / "a.json", {"q1": 0.0, "q2": 1.0}, "first")
    b = write_run(tmp_path / "b.json", {"q3": 0.5}, "second")
    assert pooled_f1([a, b], ["first", "second"], "prag") == {"q1": 0.0, "q2": 1.0, "q3": 0.5}
    with pytest.raises(SystemExit, match="none of the datasets"):
        pooled_f1([a, b], ["first"], "prag")
    again = write_run(tmp_path / "c.json", {"q2": 0.0}, "second")
    with pytest.raises(SystemExit, match="already pooled"):
        pooled_f1([a, again], ["first", "second"], "prag")


def test_common_compares_only_the_questions_every_run_answered(tmp_path):
    import subprocess
    a = write_run(tmp_path / "a.json", {"q1": 0.0, "q2": 1.0}, "first")
    b = write_run(tmp_path / "b.json", {"q3": 0.5}, "second")
    wide = write_run(tmp_path / "w.json", {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 0.0}, "first")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"
    cmd = [sys.executable, str(script), "first,second", f"{a},{b}:prag", f"{wide}:prag"]
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode != 0 and "different questions" in refused.stderr
    out = subprocess.run(cmd[:2] + ["--common"] + cmd[2:], capture_output=True, text=True, check=True).stdout
    assert "3 questions answered by every run" in out and "| 0.500 |" in out and "| 1.000 |" in out
