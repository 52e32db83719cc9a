"""Embedding source x objective ablation for the hypernetwork, at one equal training budget.

Each variant is trained with training/train_hypernet.py on training/configs/ablation.yaml (plus its
overrides), then measured with `hyperprag bench --modes closed hyper` on the same 100 held-out
SQuAD questions (20 paragraphs never trained on): lift over closed-book, the wrong-document
ablation and the delta similarity; then benchmarks/hyper_curve.py scores the same questions by
teacher-forced answer loss (own adapter, wrong document's, none), which is far less noisy than F1.
Training, bench and curve all resume, so rerunning redoes nothing.

    .venv/bin/python benchmarks/hyper_ablation.py run sentence-lm sentence-kl   # train + measure these
    .venv/bin/python benchmarks/hyper_ablation.py table                        # collect the table
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "sentence-lm": ["embedding=sentence", "weights={lm: 1.0, kl: 0.0, recon: 0.0}"],
    "sentence-kl": ["embedding=sentence", "weights={lm: 0.0, kl: 1.0, recon: 0.0}"],
    "sentence-lm+kl": ["embedding=sentence", "weights={lm: 1.0, kl: 1.0, recon: 0.0}"],
    # The hidden source embeds the training pool with the 270M base model, over 35 minutes for all
    # 1036 paragraphs on one CPU thread; a pool of 160 still gives the same 160 draws (40 x 4).
    "hidden-lm": ["embedding=hidden", "weights={lm: 1.0, kl: 0.0, recon: 0.0}", "max_docs=160"],
    "hidden-kl": ["embedding=hidden", "weights={lm: 0.0, kl: 1.0, recon: 0.0}", "max_docs=160"],
    "hidden-lm+kl": ["embedding=hidden", "weights={lm: 1.0, kl: 1.0, recon: 0.0}", "max_docs=160"],
    "sentence-lm+contrast": ["embedding=sentence", "weights={lm: 1.0, kl: 0.0, recon: 0.0, contrast: 1.0}"],
    # The base model's own token embeddings, mean-pooled: no forward pass, so the hypernetwork
    # sets the encoding cost (the speed bar); does a bag of words carry enough of the document?
    "tokens-lm": ["embedding=tokens", "weights={lm: 1.0, kl: 0.0, recon: 0.0}"],
    "tokens-lm+kl": ["embedding=tokens", "weights={lm: 1.0, kl: 1.0, recon: 0.0}"],
}
CONFIG = "training/configs/ablation.yaml"
RUNS, OUT = Path("runs/ablation"), Path("out/ablation")
BENCH = ["--data", "../shared/data/squad.jsonl", "--limit", "100", "--per-doc", "5", "--top-k", "1",
         "--modes", "closed", "hyper", "--cost-docs", "0", "--latency-queries", "2", "--repeats", "3",
         "--store", str(OUT / "store"), "--quiet"]


def step(*cmd: str) -> None:
    """One stage as a subprocess on one CPU thread (unless OMP_NUM_THREADS says otherwise), offline."""
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, *cmd], check=True, env=env)


def bench(checkpoint: Path, out: Path) -> dict:
    """Greedy F1 of closed-book and ``checkpoint``'s adapters (own and wrong document's) on the questions."""
    step("-m", "hyperprag", "bench", *BENCH, "--checkpoint", str(checkpoint), "--out", str(out))
    return json.loads((out / "results.json").read_text())


def run(name: str) -> None:
    ckpt = RUNS / name / "final"
    if not (ckpt / "model.safetensors").exists():
        step("-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
             "training/train_hypernet.py", CONFIG, *VARIANTS[name], f"out={RUNS / name}")
    bench(ckpt, OUT / name)
    step(str(Path(__file__).with_name("hyper_curve.py")), str(RUNS / name), "--out", str(OUT / name / "curve"))


def table(names: list[str]) -> str:
    rows = ["| variant | embedding | objective | hyper F1 | closed F1 | lift | wrong-doc F1 | share of lift lost "
            "| mean pairwise cosine | s/doc (batch 64) | answer loss: lift (nats) | share of it lost |",
            "|---" * 12 + "|"]
    for name in names:
        path = OUT / name / "results.json"
        emb, _, obj = name.partition("-")
        if not path.exists():
            rows.append(f"| {name} | {emb} | {obj} | not run | | | | | | | | |")
            continue
        r = json.loads(path.read_text())
        ds = r["datasets"]["squad"]
        w = ds["wrong_document"]["hyper"]
        rows.append(f"| {name} | {emb} | {obj} | {ds['modes']['hyper']['f1']:.3f} | {ds['modes']['closed']['f1']:.3f} "
                    f"| {w['lift']:+.3f} | {w['f1']:.3f} | {w['share_of_lift_lost']:.2f} "
                    f"| {ds['similarity']['hyper']['mean_pairwise_cosine']:.3f} "
                    f"| {r['cost_seconds_per_doc']['hyper']['batch64'] * 1000:.1f} ms | {loss_cells(name)} |")
    return "\n".join(rows)


def loss_cells(name: str) -> str:
    """Lift in answer loss (nats/token, positive: the adapter helps) and the share of it lost with
    the wrong document's adapter, from the curve's last point."""
    path = OUT / name / "curve" / "curve.json"
    if not path.exists():
        return "not measured | "
    curve = json.loads(path.read_text())
    last = max((v for k, v in curve.items() if k not in ("none", "exact")), key=lambda v: v["step"])
    lift = curve["none"] - last["own"]
    return f"{lift:+.4f} | {(last['wrong'] - last['own']) / lift:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("run", "table"))
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.action == "run":
        for name in args.variants:
            run(name)
    print(table(args.variants))


if __name__ == "__main__":
    main()
