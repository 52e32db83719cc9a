"""benchmarks/train_step_dtype.py: per-step times come from the log's running total, the first step
left out, and a run too short to time is refused."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_step_dtype  # noqa: E402


def test_step_seconds_are_differences_of_the_running_total():
    log = [{"step": 1, "seconds": 30.0}, {"step": 2, "seconds": 42.0}, {"step": 3, "seconds": 53.5}]
    assert train_step_dtype.step_seconds(log) == [12.0, 11.5]


def test_too_few_steps_are_refused(capsys):
    with pytest.raises(SystemExit):
        train_step_dtype.main(["--steps", "1"])
    assert "at least 2" in capsys.readouterr().err
