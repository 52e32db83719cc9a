"""benchmarks/hyper_curve.py: which snapshots a run or a checkpoint gives, and where their held-out list is."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from hyper_curve import cached_row, default_out, heldout_file, print_against, snapshots, weights_digest  # noqa: E402


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for d in ("step-200", "step-400", "final"):
        (run / d).mkdir(parents=True)
        (run / d / "model.safetensors").write_bytes(d.encode())
        (run / d / "config.json").write_text("{}")
    (run / "step-600").mkdir()  # being written: no config.json yet
    (run / "step-600" / "model.safetensors").write_bytes(b"")
    (run / "state").mkdir()
    (run / "state" / "step.json").write_text(json.dumps({"step": 607}))
    (run / "heldout_hashes.json").write_text("[]")
    return run


def test_a_run_gives_its_snapshots_in_order_and_final_at_its_last_step(tmp_path):
    run = make_run(tmp_path)
    assert snapshots(run) == [(200, run / "step-200"), (400, run / "step-400"), (607, run / "final")]


def test_final_keeps_its_own_step_when_a_resumed_run_has_moved_past_it(tmp_path):
    run = make_run(tmp_path)
    (run / "final" / "step.json").write_text(json.dumps({"step": 489}))  # the state says 607
    assert snapshots(run)[0] == (200, run / "step-200") and (489, run / "final") in snapshots(run)
    assert snapshots(run / "final") == [(489, run / "final")]


def test_two_runs_final_get_their_own_caches_and_rows_name_their_weights(tmp_path):
    assert default_out(tmp_path / "v7" / "final") != default_out(tmp_path / "v8" / "final")
    assert default_out(tmp_path / "v8" / "step-400") == Path("out/curve/v8-step-400")
    assert default_out(tmp_path / "v8") == Path("out/curve/v8")
    run = make_run(tmp_path)
    assert weights_digest(run / "final") != weights_digest(run / "step-200")
    rows = {"final@489": {"step": 489, "weights": weights_digest(run / "step-200"), "own": 1.7}}
    assert cached_row(rows, "final@489", 489, weights_digest(run / "final")) == {"step": 489, "weights": weights_digest(run / "final")}
    rows["final@489"]["own"] = 1.6
    assert cached_row(rows, "final@489", 489, weights_digest(run / "final"))["own"] == 1.6  # its own row is kept


def test_a_runs_final_alone_is_one_snapshot_with_the_runs_held_out_list(tmp_path):
    run = make_run(tmp_path)
    assert snapshots(run / "final") == [(607, run / "final")]
    assert heldout_file(run / "final") == run / "heldout_hashes.json"


def test_a_shipped_checkpoint_carries_its_own_step_and_held_out_list(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"")
    (ckpt / "training_log.jsonl").write_text(json.dumps({"step": 5}) + "\n" + json.dumps({"step": 489}) + "\n")
    (ckpt / "heldout_hashes.json").write_text("[]")
    assert snapshots(ckpt) == [(489, ckpt)]
    assert heldout_file(ckpt) == ckpt / "heldout_hashes.json"


def test_no_held_out_list_is_a_one_line_exit(tmp_path):
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(SystemExit, match="no heldout_hashes.json here or in"):
        heldout_file(tmp_path / "ckpt")


def test_against_pairs_each_question_with_the_other_curves_row(tmp_path, capsys):
    other = tmp_path / "curve.json"
    from hyperprag.metrics import paired_bootstrap

    # the other curve lists its questions in another order, and the differences vary: only a
    # pairing by id gives the interval of the aligned lists
    other.write_text(json.dumps({"final@489": {"step": 489, "own_by_question": {"c": 3.0, "a": 2.0, "b": 1.0}}}))
    rows = {"final@607": {"step": 607, "own": 1.5, "own_by_question": {"a": 1.5, "b": 0.9, "c": 2.0}}}
    print_against(rows, ["final@607"], f"{other}:final@489")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    mean, lo, hi = paired_bootstrap([1.5, 0.9, 2.0], [2.0, 1.0, 3.0])
    assert last == f"| 607 | 1.5000 | {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] |"
    assert (mean, lo, hi) != paired_bootstrap([1.5, 0.9, 2.0], [3.0, 2.0, 1.0])

    rows["final@607"]["own_by_question"] = {"a": 1.5, "b": 0.5, "d": 2.5}
    with pytest.raises(SystemExit, match="different questions"):
        print_against(rows, ["final@607"], f"{other}:final@489")
    with pytest.raises(SystemExit, match="no row 'step-1'"):
        print_against(rows, ["final@607"], f"{other}:step-1")
