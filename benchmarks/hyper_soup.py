"""Average the weights of hypernetwork checkpoints ("model soup"), to ask whether runs that continued
from one checkpoint on different seeds or objectives average into a better generator than any one.

Averaging is only meaningful between checkpoints of one lineage (same architecture, started from
the same weights), so the configs must be identical, and the held-aside lists too: a soup of runs
that held out different documents would have trained on some benchmark documents.

    .venv/bin/python benchmarks/hyper_soup.py CKPT CKPT [CKPT ...] --out runs/soup
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hyperprag.hyper_encoder import provenance_file

def soup(checkpoints: list[Path], out: Path) -> Path:
    if len(checkpoints) < 2:
        raise SystemExit("give at least two checkpoints to average")
    config = (checkpoints[0] / "config.json").read_text()
    heldout = provenance_file(checkpoints[0], "heldout_hashes.json")
    for ckpt in checkpoints[1:]:
        if json.loads((ckpt / "config.json").read_text()) != json.loads(config):
            raise SystemExit(f"{ckpt} has another config than {checkpoints[0]}: only one lineage can be averaged")
        other = provenance_file(ckpt, "heldout_hashes.json")
        if (heldout is None) != (other is None) or (
                heldout and json.loads(heldout.read_text()) != json.loads(other.read_text())):
            raise SystemExit(f"{ckpt} held aside other documents than {checkpoints[0]}")
    states = [load_file(str(c / "model.safetensors")) for c in checkpoints]
    if any(s.keys() != states[0].keys() for s in states):
        raise SystemExit("the checkpoints hold different tensors")
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}
    out.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(out / "model.safetensors"))
    if heldout:
        shutil.copy(heldout, out / "heldout_hashes.json")
    (out / "soup.json").write_text(json.dumps({"averaged": [str(c) for c in checkpoints]}, indent=2))
    (out / "config.json").write_text(config)  # last: config.json marks a complete checkpoint
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint directories of one lineage")
    p.add_argument("--out", type=Path, required=True, help="directory for the averaged checkpoint")
    args = p.parse_args(argv)
    print(soup(args.checkpoints, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
