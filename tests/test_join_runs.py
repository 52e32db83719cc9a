"""benchmarks/join_runs.py: modes of several bench runs joined into one results.json."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from join_runs import join  # noqa: E402


def write_run(path: Path, dataset: str, modes: dict[str, dict[str, float]]) -> Path:
    preds = {m: [{"id": i, "prediction": m, "f1": v} for i, v in f1.items()] for m, f1 in modes.items()}
    path.write_text(json.dumps({"datasets": {dataset: {"predictions": preds}}}))
    return path


def test_each_mode_comes_from_its_own_runs_in_the_questions_order(tmp_path):
    wide = write_run(tmp_path / "wide.json", "all", {"closed": {"q1": 0.0, "q2": 0.5, "q3": 1.0, "q9": 0.0}})
    a = write_run(tmp_path / "a.json", "first", {"prag": {"q2": 0.25}})
    b = write_run(tmp_path / "b.json", "rest", {"prag": {"q3": 1.0, "q1": 0.75}})
    joined = join(["q1", "q2", "q3"], [f"closed={wide}:all", f"prag={a}:first,{b}:rest"])
    assert [r["f1"] for r in joined["prag"]] == [0.75, 0.25, 1.0]
    assert [r["id"] for r in joined["closed"]] == ["q1", "q2", "q3"]


def test_missing_doubled_or_absent_answers_are_refused(tmp_path):
    a = write_run(tmp_path / "a.json", "first", {"prag": {"q1": 0.25}})
    with pytest.raises(SystemExit, match="1 of the 2 questions have no answer"):
        join(["q1", "q2"], [f"prag={a}:first"])
    with pytest.raises(SystemExit, match="already in an earlier source"):
        join(["q1"], [f"prag={a}:first,{a}:first"])
    with pytest.raises(SystemExit, match="no mode 'rag'"):
        join(["q1"], [f"rag={a}:first"])
    with pytest.raises(SystemExit, match="list 1 ids twice, e.g. 'q1'"):  # a question file concatenated wrongly
        join(["q1", "q1"], [f"prag={a}:first"])
