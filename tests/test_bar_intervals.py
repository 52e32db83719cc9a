"""benchmarks/bar_intervals.py: the bar's shares pooled over bench runs, with their intervals."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bar_intervals import _share, bar_figures, parse_group, pooled_rows  # noqa: E402


def write_run(run: Path, dataset: str, f1: dict[str, list[float]], prefix: str = "q") -> None:
    (run / "work").mkdir(parents=True)
    for mode, values in f1.items():
        rows = [{"id": f"{prefix}{i}", "f1": v} for i, v in enumerate(values)]
        (run / "work" / f"answers-{dataset}-{mode}-0123456789ab.jsonl").write_text("\n".join(map(json.dumps, rows)))


def test_runs_pool_by_question_and_the_shares_follow_the_bar(tmp_path):
    # rag gains 1 on every other question; hyper gains 0.5 on the same ones; the wrong adapters keep a quarter
    one = {"closed": [0.0, 0.0] * 10, "rag": [1.0, 0.0] * 10, "hyper": [0.5, 0.0] * 10,
           "hyper-wrongdoc": [0.125, 0.0] * 10}
    write_run(tmp_path / "a", "squad", one)
    write_run(tmp_path / "b", "questions", one, prefix="r")
    write_run(tmp_path / "c", "squad", one)  # the same questions as run a: counted twice, they would narrow the interval
    with pytest.raises(SystemExit, match="20 questions of squad are already in an earlier source"):
        pooled_rows([(tmp_path / "a", "squad"), (tmp_path / "c", "squad")])
    rows = pooled_rows([(tmp_path / "a", "squad"), (tmp_path / "b", "questions")])
    assert len(rows) == 40
    f = bar_figures(rows)
    assert f["means"]["rag"] == pytest.approx(0.5) and f["n"] == 40
    assert f["gap_share"] == pytest.approx((0.5, 0.5, 0.5))
    assert f["lift_lost"] == pytest.approx((0.75, 0.75, 0.75))
    # the trained adapters against the same bar: prag's own columns, not hyper's
    write_run(tmp_path / "d", "squad", {"closed": [0.0] * 4, "rag": [1.0] * 4, "prag": [0.25] * 4,
                                        "prag-wrongdoc": [0.0] * 4}, prefix="p")
    f = bar_figures(pooled_rows([(tmp_path / "d", "squad")], "prag"), "prag")
    assert f["gap_share"] == pytest.approx((0.25, 0.25, 0.25)) and f["lift_lost"] == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(SystemExit, match="squad/hyper"):
        pooled_rows([(tmp_path / "d", "squad")])


def test_each_row_holds_one_question_whatever_order_the_answer_files_list_it_in(tmp_path):
    write_run(tmp_path / "a", "squad", {"closed": [0.0, 0.1, 0.2], "rag": [1.0, 0.9, 0.8], "hyper": [0.5, 0.6, 0.7],
                                        "hyper-wrongdoc": [0.3, 0.2, 0.1]})
    hyper = tmp_path / "a" / "work" / "answers-squad-hyper-0123456789ab.jsonl"
    hyper.write_text("\n".join(reversed(hyper.read_text().splitlines())))
    assert pooled_rows([(tmp_path / "a", "squad")]) == [
        {"closed": c, "rag": r, "hyper": h, "hyper-wrongdoc": w}
        for c, r, h, w in [(0.0, 1.0, 0.5, 0.3), (0.1, 0.9, 0.6, 0.2), (0.2, 0.8, 0.7, 0.1)]]


def test_modes_on_different_questions_and_bad_specs_are_refused(tmp_path):
    write_run(tmp_path / "a", "squad", {"closed": [0.0, 1.0], "rag": [1.0], "hyper": [0.0, 0.0], "hyper-wrongdoc": [0.0, 0.0]})
    with pytest.raises(SystemExit, match="answer different questions"):
        pooled_rows([(tmp_path / "a", "squad")])
    with pytest.raises(SystemExit, match="expected one answer file for squad/closed"):
        pooled_rows([(tmp_path / "nothing", "squad")])
    assert parse_group("SQuAD=out/a:squad,out/b:questions") == ("SQuAD", [(Path("out/a"), "squad"), (Path("out/b"), "questions")])
    with pytest.raises(SystemExit, match="expected DIR:DATASET"):
        parse_group("SQuAD=out/a")


def test_a_results_json_with_the_ablation_answers_needs_no_work_directory(tmp_path):
    preds = {m: [{"id": f"q{i}", "prediction": "x", "f1": v} for i, v in enumerate(values)]
             for m, values in {"closed": [0.0, 0.0], "rag": [1.0, 1.0], "hyper": [1.0, 0.0], "hyper-wrongdoc": [0.0, 0.0]}.items()}
    (tmp_path / "results.json").write_text(json.dumps({"datasets": {"squad": {"predictions": preds}}}))
    f = bar_figures(pooled_rows([(tmp_path, "squad")]))
    assert f["gap_share"][0] == pytest.approx(0.5) and f["lift_lost"][0] == pytest.approx(1.0)


def test_a_share_of_a_gap_that_may_be_zero_is_not_given():
    assert _share((0.34, 0.09, 0.61), (0.276, 0.187, 0.368), "gap") == "34% [9%, 61%]"
    assert _share((0.34, -1.58, 2.29), (0.096, -0.009, 0.204), "gap") == "not measured: gap +0.096 [-0.009, +0.204]"


def test_a_results_json_without_the_dataset_or_mode_says_what_it_has(tmp_path):
    """Not 'expected one answer file in work/': the run's results.json is what lacks it."""
    preds = {m: [{"id": "q0", "prediction": "x", "f1": 0.0}] for m in ("closed", "rag", "hyper")}
    (tmp_path / "results.json").write_text(json.dumps({"datasets": {"squad": {"predictions": preds}}}))
    with pytest.raises(SystemExit, match=r"no dataset 'squadd' \(has squad\)"):
        pooled_rows([(tmp_path, "squadd")])
    with pytest.raises(SystemExit, match=r"squad has no mode 'hyper-wrongdoc' \(has closed, rag, hyper\)"):
        pooled_rows([(tmp_path, "squad")])
