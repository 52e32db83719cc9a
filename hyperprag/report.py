"""``report.md`` for a bench run, written from its results alone. Every sentence that compares modes
is computed from the figures, so the report cannot claim more than the run showed."""
from __future__ import annotations

from pathlib import Path

from .files import write_text_atomic


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _defined(values: list[float] | None) -> bool:
    """A share's interval is NaN (null in results.json) where there is no gap to divide by: print
    none rather than 'nan'."""
    return bool(values) and all(v is not None and v == v for v in values)


def _lift_unmeasured(w: dict) -> bool:
    """Whether a wrong-document entry's lift interval reaches zero: its share of that lift lost is
    then the share of nothing measurable, and is not printed."""
    lift = w.get("lift_interval")
    return bool(lift) and lift[0] <= 0


def _interval(ci: list[float] | None) -> str:
    """' [lo, hi]' of a 95% bootstrap interval (bench's ``intervals``), or nothing where the run has none."""
    return f" [{_f(ci[0], 2)}, {_f(ci[1], 2)}]" if _defined(ci) else ""


def _pct_interval(estimate: list[float] | None) -> str:
    return f" [{estimate[1]:.0%}, {estimate[2]:.0%}]" if _defined(estimate) else ""


def _secs(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.1f} s"


def headline_table(results: dict) -> str:
    """Mode x dataset F1 (EM), the table the README shows."""
    datasets = results["datasets"]
    modes = list(next(iter(datasets.values()))["modes"])
    head = "| mode | " + " | ".join(f"{n} F1 (EM), n={d['n_questions']}" for n, d in datasets.items()) + " |"
    rows = [head, "|---" * (len(datasets) + 1) + "|"]
    for m in modes:
        cells = [f"{_f(d['modes'][m]['f1'])} ({_f(d['modes'][m]['em'], 2)})" for d in datasets.values()]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def verdicts(results: dict) -> list[str]:
    """Plain statements of where generated adapters stand against trained ones and against the bar."""
    lines = []
    for name, ds in results["datasets"].items():
        m = ds["modes"]
        if not {"closed", "rag"} <= m.keys():
            continue
        gap = m["rag"]["f1"] - m["closed"]["f1"]
        intervals = ds.get("intervals", {})
        g = intervals.get("gap")
        gap_measured = not (g and g[1] <= 0)
        if not gap_measured:
            lines.append(f"{name}: the closed->rag gap itself is not clearly above zero on these questions "
                         f"({g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]), so no share of it is measured here.")
        for mode in ("prag", "hyper"):
            if mode not in m:
                continue
            if gap_measured and abs(gap) > 1e-9:
                share = (m[mode]["f1"] - m["closed"]["f1"]) / gap
                lines.append(f"{name}: `{mode}` closes {share:.0%}{_pct_interval(intervals.get('gap_share', {}).get(mode))} "
                             f"of the closed->rag F1 gap ({_f(m['closed']['f1'])} -> {_f(m[mode]['f1'])}, "
                             f"rag {_f(m['rag']['f1'])}).")
            else:
                lines.append(f"{name}: `{mode}` scores F1 {_f(m[mode]['f1'])} (closed {_f(m['closed']['f1'])}, "
                             f"rag {_f(m['rag']['f1'])}).")
        if {"prag", "hyper"} <= m.keys():
            d = m["hyper"]["f1"] - m["prag"]["f1"]
            word = "match" if abs(d) < 5e-4 else "beat" if d > 0 else "fall short of"
            ci = intervals.get("hyper_minus_prag")
            ci_text = f"; hyper - prag, paired 95% interval [{ci[1]:+.3f}, {ci[2]:+.3f}]" if ci else ""
            by = "" if word == "match" else f" by {abs(d):.3f} F1"
            lines.append(f"{name}: generated adapters {word} trained ones{by} "
                         f"(hyper {_f(m['hyper']['f1'])} vs prag {_f(m['prag']['f1'])}{ci_text}).")
        for mode, w in ds.get("wrong_document", {}).items():
            lift = w.get("lift_interval")
            head = (f"{name}: with another document's adapters `{mode}` scores F1 {_f(w['f1'])}; ")
            if _lift_unmeasured(w):
                lines.append(head + f"the share of its lift lost is not measured: its lift over "
                             f"{w.get('baseline', 'closed')} is not clearly above zero "
                             f"({w['lift']:+.3f} [{lift[0]:+.3f}, {lift[1]:+.3f}]).")
            else:
                lines.append(head + f"share of its lift lost {_f(w['share_of_lift_lost'], 2)}"
                             f"{_interval(w.get('share_of_lift_lost_interval'))} (lift over "
                             f"{w.get('baseline', 'closed')} {w['lift']:+.3f}; 1.0 = all of it, the adapter is "
                             "specific).")
    cost = results.get("cost_seconds_per_doc", {})
    if "exact_over_hyper" in cost:
        r = cost["exact_over_hyper"]
        lines.append(f"Generating an adapter is {r['batch1']:,.0f}x cheaper than training one at batch 1 "
                     f"and {r['batch64']:,.0f}x at batch 64 (the bar is 10,000x).")
    return lines


def write_report(results: dict, out: Path, plots: dict[str, str]) -> Path:
    L: list[str] = ["# hyperprag bench report", ""]
    L += ["Every mode answers the same questions with the same retrieved passages. Timings are medians "
          "over repeats; timings that are compared were measured interleaved in one process. Figures in "
          "brackets are 95% bootstrap intervals over the questions (10,000 resamples).", ""]
    if results.get("command"):
        L += ["Command:", "", "```bash", results["command"], "```", ""]
    v = results["versions"]
    L += [f"Base model `{results['base_model']}`; encoders: "
          + ", ".join(f"{n} `{k}`" for n, k in results["encoders"].items())
          + (f"; hypernetwork checkpoint `{results['hyper_checkpoint']}`" if results.get("hyper_checkpoint") else "")
          + ".", "",
          f"hyperprag {v['hyperprag']} (commit {v['git_commit']}), torch {v['torch']}, transformers "
          f"{v['transformers']}, peft {v['peft']}, Python {v['python']}; {v['machine']}.", ""]
    s = results["settings"]
    merge = ", ".join(f"{n} `{m}`" for n, m in results["merge"].items()) or "n/a (no adapters)"
    L += [f"Settings: top-k {results['options'].get('top_k', 'n/a')}, merge {merge}, batch {s['batch_size']}, "
          f"up to {s['max_new_tokens']} new tokens, greedy. Cost, latency and throughput are measured on "
          f"`{results['timing_dataset']}` (the first data file).", ""]

    L += ["## Summary", ""] + [f"- {line}" for line in verdicts(results)] + [""]
    L += ["## Quality (EM/F1)", "", headline_table(results), ""]
    for name, ds in results["datasets"].items():
        L += [f"### {name}", "", f"`{ds['path']}`: {ds['n_questions']} questions, {ds['n_passages']} distinct "
              f"retrieved passages from {ds['n_titles']} titles."]
        if ds.get("hyper_trained_on") is not None:
            L += [f"Passages the hypernetwork may have been trained on: {ds['hyper_trained_on']}."]
        L += ["", "| mode | EM | F1 | s/question (batched) |", "|---|---|---|---|"]
        for m, r in ds["modes"].items():
            L.append(f"| {m} | {_f(r['em'])} | {_f(r['f1'])} | {r['seconds_per_question']:.2f} |")
        types = sorted({t for r in ds["modes"].values() for t in r.get("by_type", {})})
        if types:
            L += ["", "F1 per question type:", "", "| mode | " + " | ".join(
                f"{t} (n={next(iter(ds['modes'].values()))['by_type'][t]['n']})" for t in types) + " |",
                  "|---" * (len(types) + 1) + "|"]
            for m, r in ds["modes"].items():
                L.append(f"| {m} | " + " | ".join(_f(r["by_type"][t]["f1"]) for t in types) + " |")
        if ds.get("wrong_document"):
            L += ["", "Wrong-document ablation (each question answered with another question's adapters):", "",
                  "| mode | F1 right adapters | F1 wrong adapters | lift (over) | share of lift lost [95% interval] |",
                  "|---|---|---|---|---|"]
            for m, w in ds["wrong_document"].items():
                lift = w.get("lift_interval")
                share = (f"not measured (lift [{lift[0]:+.3f}, {lift[1]:+.3f}])" if _lift_unmeasured(w) else
                         f"{_f(w['share_of_lift_lost'], 2)}{_interval(w.get('share_of_lift_lost_interval'))}")
                L.append(f"| {m} | {_f(ds['modes'][m]['f1'])} | {_f(w['f1'])} | {w['lift']:+.3f} "
                         f"({w.get('baseline', 'closed')}) | {share} |")
        if ds.get("similarity"):
            first = next(iter(ds["similarity"].values()))
            L += ["", f"Mean pairwise cosine of the per-document deltas (first {len(first['matrix'])} passages, "
                  f"{first['distinct_titles']} distinct titles: passages on one subject share more; near 1 = one "
                  "adapter for every document): "
                  + ", ".join(f"{n} {_f(x['mean_pairwise_cosine'])}" for n, x in ds["similarity"].items()) + "."]
        L.append("")

    cost = results.get("cost_seconds_per_doc", {})
    if cost:
        L += ["## Cost of parameterising a document", "", "| encoder | seconds per document |", "|---|---|"]
        if "exact" in cost:
            e = cost["exact"]
            L += [f"| exact: augmentation (cold cache) | {_secs(e['augment'])} |",
                  f"| exact: training | {_secs(e['train'])} |",
                  f"| exact: total (median of {e['n_docs']} documents) | {_secs(e['total'])} |"]
        if "hyper" in cost:
            h = cost["hyper"]
            L += [f"| generated, batch 1 | {_secs(h['batch1'])} |",
                  f"| generated, batch 64 (per document) | {_secs(h['batch64'])} |",
                  f"| of which embedding (batch 64) | {_secs(h['embed64'])} |",
                  f"| of which hypernetwork (batch 64) | {_secs(h['hypernet64'])} |"]
        L.append("")
    if results.get("bytes_per_doc"):
        L += ["Bytes stored per document: " + ", ".join(f"{n} {int(b):,}" for n, b in results["bytes_per_doc"].items())
              + ".", ""]
    lat = results.get("latency_seconds")
    if lat:
        L += ["## Query latency (batch 1, 8 new tokens)", "", "| mode | seconds | ratio to rag |", "|---|---|---|"]
        for m, secs in lat.items():
            if m != "ratio_to_rag":
                L.append(f"| {m} | {secs:.3f} | {_f(lat.get('ratio_to_rag', {}).get(m), 2) if m != 'rag' else '1.00'} |")
        L += ["", "`hyper+encode` generates and merges the passages' adapters inside each query (nothing stored).", ""]
    thr = results.get("throughput_q_per_s")
    if thr:
        L += [f"## Throughput ({thr['batch']} queries in one batch, each with its own merged adapters)", "",
              "| run | queries/s | ratio to plain |", "|---|---|---|", f"| plain | {thr['plain']:.2f} | 1.00 |"]
        for k, r in thr["ratio_to_plain"].items():
            L.append(f"| {k} | {thr[k]:.2f} | {r:.2f} |")
        L.append("")
    if plots:
        L += ["## Plots", ""] + [f"![{name}]({file})" for name, file in plots.items()] + [""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(L))
    return path
