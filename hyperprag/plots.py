"""The bench's PNG plots, drawn from ``results.json`` alone (so they can be redrawn without rerunning)."""
from __future__ import annotations

from pathlib import Path

ENCODER_LABEL = {"exact": "exact (trained)", "hyper": "generated"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def write_plots(results: dict, out: Path) -> dict[str, str]:
    """Write every plot the results allow; returns {plot name: file name}."""
    written = {"f1_per_mode": _f1_per_mode(results, out / "f1_per_mode.png")}
    if _f1_vs_cost(results, out / "f1_vs_cost.png"):
        written["f1_vs_cost"] = "f1_vs_cost.png"
    if _similarity(results, out / "similarity.png"):
        written["similarity"] = "similarity.png"
    return written


def _f1_per_mode(results: dict, path: Path) -> str:
    plt = _pyplot()
    datasets = results["datasets"]
    modes = list(next(iter(datasets.values()))["modes"])
    width = 0.8 / len(datasets)
    fig, ax = plt.subplots(figsize=(1.4 * len(modes) + 2, 4))
    for j, (name, ds) in enumerate(datasets.items()):
        xs = [i + (j - (len(datasets) - 1) / 2) * width for i in range(len(modes))]
        ys = [ds["modes"][m]["f1"] for m in modes]
        bars = ax.bar(xs, ys, width, label=f"{name} (n={ds['n_questions']})")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(modes)), modes)
    ax.set_ylabel("F1")
    ax.set_title("F1 per mode (same questions, same retrieved passages)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _f1_vs_cost(results: dict, path: Path) -> bool:
    cost = results.get("cost_seconds_per_doc") or {}
    points = []  # (label, seconds per document, encoder's adapter-only mode, its combine mode)
    if "exact" in cost:
        points.append(("exact", cost["exact"]["total"], "prag", "prag-combine"))
    if "hyper" in cost:
        points += [("generated, batch 1", cost["hyper"]["batch1"], "hyper", "hyper-combine"),
                   ("generated, batch 64", cost["hyper"]["batch64"], "hyper", "hyper-combine")]
    if not points:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (c, (name, ds)) in enumerate(zip(colors, results["datasets"].items())):
        for j, (label, secs, mode, combine) in enumerate(points):
            if mode in ds["modes"]:
                ax.scatter(secs, ds["modes"][mode]["f1"], color=c, marker="o")
                if k == 0:  # name the encoder once; batch 1 and 64 sit close, so one above, one below
                    ax.annotate(label, (secs, ds["modes"][mode]["f1"]), fontsize=7, xytext=(4, 6 - 14 * (j % 2)),
                                textcoords="offset points")
            if combine in ds["modes"]:
                ax.scatter(secs, ds["modes"][combine]["f1"], facecolors="none", edgecolors=c, marker="s")
        for ref, style in (("closed", ":"), ("rag", "--")):
            if ref in ds["modes"]:
                ax.axhline(ds["modes"][ref]["f1"], color=c, linestyle=style, linewidth=1,
                           label=f"{name} {ref} (no encoding)")
        ax.scatter([], [], color=c, marker="o", label=f"{name}: adapters only")
        ax.scatter([], [], facecolors="none", edgecolors=c, marker="s", label=f"{name}: adapters + passages")
    ax.set_xscale("log")
    ax.set_xlabel("seconds to parameterise one document (log scale)")
    ax.set_ylabel("F1")
    ax.set_title("Quality against encoding cost")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _similarity(results: dict, path: Path) -> bool:
    panels = [(name, enc, sim) for name, ds in results["datasets"].items()
              for enc, sim in ds.get("similarity", {}).items()]
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 3.6), squeeze=False)
    for i, (ax, (name, enc, sim)) in enumerate(zip(axes[0], panels)):
        im = ax.imshow(sim["matrix"], vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"{name}: {ENCODER_LABEL.get(enc, enc)}\nmean off-diagonal {sim['mean_pairwise_cosine']:.2f}",
                     fontsize=9)
        ax.set_xlabel("document")
        if i == 0:
            ax.set_ylabel("document")
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine of the deltas")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
