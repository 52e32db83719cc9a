"""Seconds per hypernetwork training step in fp32 and under bf16 autocast, side by side in one run.

Each round runs the recipe for a few steps once per setting (interleaved, so a machine that slows
down mid-run slows both), same config and seed, so step 1 trains on the same batch in both and its
losses show what bf16 changes numerically. Steps after the first are timed (the first pays for
warm-up).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_step_dtype.py --steps 6 -- "augmented=[]" augment_cache=null
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("no", "bf16")


def run_recipe(config: str, out: Path, setting: str, steps: int, overrides: list[str]) -> list[dict]:
    cmd = [sys.executable, str(ROOT / "training" / "train_hypernet.py"), config, f"steps={steps}", "log_every=1",
           "save_every=100000", "max_minutes=null", f"mixed_precision={setting}", f"out={out}", *overrides]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def step_seconds(log: list[dict]) -> list[float]:
    """Per-step wall time from the log's running total, the first step left out."""
    seconds = [r["seconds"] for r in log]
    return [b - a for a, b in zip(seconds, seconds[1:])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="training/configs/augmented_cpu.yaml", help="recipe config to time")
    p.add_argument("--steps", type=int, default=6, help="steps per run (the first is not timed)")
    p.add_argument("--rounds", type=int, default=1, help="runs per setting, interleaved")
    p.add_argument("--out", type=Path, default=Path("out/train_step_dtype"), help="where the runs write")
    p.add_argument("overrides", nargs="*", help="key=value overrides for the config, after --")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2: the first step is not timed")
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    first: dict[str, dict] = {}
    for r in range(args.rounds):
        for setting in SETTINGS:
            out = args.out / f"{setting}-{r}"
            if out.exists():
                raise SystemExit(f"{out} exists: remove it or give another --out (a resumed run times nothing)")
            log = run_recipe(args.config, out, setting, args.steps, args.overrides)
            times[setting] += step_seconds(log)
            first.setdefault(setting, log[0])
    fp32 = statistics.median(times["no"])
    print(f"{args.config}, {args.steps} steps x {args.rounds} round(s), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| setting | median s/step | steps timed | speed vs fp32 | step-1 loss |")
    print("|---|---|---|---|---|")
    for setting in SETTINGS:
        median = statistics.median(times[setting])
        print(f"| {'fp32' if setting == 'no' else setting} | {median:.2f} | {len(times[setting])} | "
              f"{fp32 / median:.2f}x | {first[setting]['loss']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
