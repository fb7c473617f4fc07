"""Figures (matplotlib Agg) and the Markdown/HTML report of a sweep (used by :mod:`synthmed.report`)."""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from synthmed.figures import pyplot
from synthmed.stats.equivalence import describe, isotonic_decreasing
from synthmed.sweep.provenance import provenance_line
from synthmed.stats.summaries import summarize
from synthmed.tracking.names import HEADLINE, HELDOUT_LOSS, LOOKUP_CE, PRIOR_CE, THESIS_READINGS

if TYPE_CHECKING:
    import pandas as pd

    from synthmed.stats.tables import Tables
    from synthmed.sweep.results import SweepData

DEFINITIONS = (
    "Each cell is one (model, policy, real fraction); each simulation *i* uses the same seed in every "
    "cell, so every policy at a real fraction trains on the same stratified real sample (paired design). "
    "*median [95% CI]*: median over simulations with a percentile bootstrap interval (2000 resamples). "
    "*IQR*: interquartile range. *mean ± std*: std with ddof=1. *Δ ... HL*: Hodges–Lehmann estimate of "
    "(configuration − baseline) over the simulations both finished (the median of the Walsh averages: "
    "what the Wilcoxon test is about), with its distribution-free 95% interval (– with fewer than 6 "
    "pairs, where no such interval exists); *p*: two-sided Wilcoxon signed-rank test (1 when all "
    "differences are zero, empty with fewer than two pairs); *p (Holm)*: adjusted across every "
    "comparison of this report; *rank-biserial r*: the matched-pairs effect size. Cells that share "
    "another cell's runs (identical by construction, e.g. synthetic at real fraction 1.0) are not "
    "compared with it. Lower cross-entropy is better."
)


def distribution_figure(results: pd.DataFrame, model: str, policies: list[str], fracs: list[float]) -> Figure:
    """Test cross-entropy per policy at each real fraction: points over box plots (thesis Fig. 7.2)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(fracs), figsize=(max(4.8, 1.2 + 0.9 * len(policies) * len(fracs)), 4.2),  # wide enough for the title
                             sharey=True, squeeze=False)
    rng = np.random.default_rng(0)
    colors = plt.get_cmap("tab10")
    for ax, frac in zip(axes[0], fracs):
        cell = results[(results.model == model) & (results.real_frac == frac)]
        values = [cell[cell.policy == p][HEADLINE].dropna().to_numpy() for p in policies]
        positions = np.arange(1, len(policies) + 1)
        kept = [(pos, v) for pos, v in zip(positions, values) if len(v)]
        if kept:
            ax.boxplot([v for _, v in kept], positions=[p for p, _ in kept], widths=0.6, showfliers=False,
                       medianprops={"color": "black"})
        for j, (pos, v) in enumerate(zip(positions, values)):
            ax.scatter(pos + rng.uniform(-0.18, 0.18, len(v)), v, s=10, alpha=0.6, color=colors(j % 10), zorder=3)
        ax.set_xticks(positions, policies, rotation=30, ha="right")
        ax.set_title(f"real fraction {frac:g}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test cross-entropy")
    fig.suptitle(f"{model}: test cross-entropy per simulation")
    fig.tight_layout()
    return fig


def reference_lines(results: pd.DataFrame, model: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per real fraction, the median of what each run logged beside itself (:data:`REFERENCE_METRICS`):
    ``{label: (fractions, medians)}`` for the lookup and the class prior; empty where runs logged none."""
    rows = results[results["model"] == model]
    out = {}
    for metric, label in ((LOOKUP_CE, "1-NN pixel lookup (no learning)"), (PRIOR_CE, "class prior")):
        if metric not in rows or rows[metric].isna().all():
            continue
        medians = rows.groupby("real_frac")[metric].median().dropna()
        out[label] = ([float(f) for f in medians.index], [float(v) for v in medians.to_numpy()])
    return out


def median_figure(summary: pd.DataFrame, model: str, policies: list[str],
                  references: dict[str, tuple[list[float], list[float]]] | None = None) -> Figure:
    """Median test cross-entropy against real fraction per policy, with 95% CI bands (Fig. 7.1 extended).

    ``references`` (:func:`reference_lines`) are drawn in grey: what a lookup with no learning, and the
    class prior, score at each fraction — a policy's curve above them shows nothing learned beyond them.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (label, (xs, ys)), style in zip((references or {}).items(), ("--", ":")):
        ax.plot(xs, ys, style, color="0.35", marker="x", label=label, zorder=1)
    drawn = False
    colors = plt.get_cmap("tab10")
    for j, policy in enumerate(policies):
        rows = summary[(summary.model == model) & (summary.policy == policy)].sort_values("real_frac")
        if rows.empty:
            continue
        x = rows.real_frac.to_numpy() + (j - (len(policies) - 1) / 2) * 0.006  # dodged, so the bars stay apart
        median, low, high = (rows[f"{HEADLINE}.{k}"].to_numpy() for k in ("median", "ci_low", "ci_high"))
        ax.errorbar(x, median, yerr=[median - low, high - median], marker="o", capsize=3, color=colors(j % 10),
                    label=policy)
        drawn = True
        if len(x) > 1:
            ax.fill_between(x, low, high, color=colors(j % 10), alpha=0.12)
    fracs = sorted(summary[summary.model == model].real_frac.unique())
    if fracs:
        ax.set_xticks(fracs, [f"{f:g}" for f in fracs])
        ax.set_xlim(min(fracs) - 0.08, max(fracs) + 0.08)
    ax.set_xlabel("real fraction of the training images")
    ax.set_ylabel("median test cross-entropy (95% CI)")
    ax.set_title(f"{model}: median test cross-entropy")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(title="policy", fontsize=8)
    else:  # every simulation of this model failed: say so instead of an empty chart
        ax.text(0.5, 0.5, "no finished simulations", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def equivalence_figure(results: pd.DataFrame, table: pd.DataFrame, model: str, *, metric: str = HEADLINE,
                       baseline: str = "none") -> Figure:
    """The baseline's medians and monotone fit against the fraction, each policy projected onto it.

    ``table`` is :func:`synthmed.stats.equivalence.real_scan_equivalents` of ``metric`` over ``results``.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    base = results[(results["model"] == model) & (results["policy"] == baseline)]
    fracs = sorted(base["real_frac"].unique())
    medians = [float(base.loc[np.isclose(base["real_frac"], f), metric].median()) for f in fracs]
    sizes = [int(np.isclose(base["real_frac"], f).sum()) for f in fracs]
    fitted = isotonic_decreasing(medians, sizes)
    ax.plot(fracs, medians, "o", color="black", label=f"{baseline}: median per fraction")
    ax.plot(fracs, fitted, "-", color="black", alpha=0.6, label=f"{baseline}: monotone fit")
    if min(fitted, default=0) > 0:  # X* is read off straight lines in log-log (equivalence.invert_curve): draw them so
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(fracs, [f"{f:g}" for f in fracs])
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"])
    shown: dict[str, str] = {}
    for row in table[table["model"] == model].to_dict("records"):
        first = row["policy"] not in shown
        color = shown.setdefault(row["policy"], next(colors, "tab:gray"))
        y, x0, xs = row["median"], row["real_frac"], row["equivalent"]
        ax.plot([x0], [y], "s", color=color, label=f"{row['policy']}: median at its real fraction" if first else None)
        if row["status"] == "ok" and math.isfinite(xs):
            ax.plot([x0, xs], [y, y], ":", color=color)
            ax.plot([xs, xs], [y, ax.get_ylim()[0]], "--", color=color, alpha=0.7)
            if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
                ax.errorbar([xs], [y], xerr=[[xs - row["ci_low"]], [max(row["ci_high"], xs) - xs]], fmt="none",
                            ecolor=color, capsize=3)
        elif row["status"] == "beyond":
            ax.annotate("beyond", (x0, y), textcoords="offset points", xytext=(6, -10), color=color, fontsize=8)
    ax.set_xlabel("real fraction")
    ax.set_ylabel(f"median {metric}")
    ax.set_title(f"{model}: real-scan equivalent of each policy (dashed: X*)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- tables as text --------------------------------------------------------------------------------
def _num(v: Any, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _p_value(v: Any) -> str:
    """p-values below 0.0001 read as such, not as a misleading 0.0000."""
    text = _num(v, 4)
    return "< 0.0001" if text and float(v) < 1e-4 else text


def _with_ci(row: dict[str, Any], key: str, center: str = "median") -> str:
    if key + f".{center}" not in row or _num(row[f"{key}.{center}"]) == "":
        return ""
    return f"{_num(row[f'{key}.{center}'])} [{_num(row[f'{key}.ci_low'])}, {_num(row[f'{key}.ci_high'])}]"


def summary_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    head = ["model", "policy", "real fraction", "n", "cross-entropy median [95% CI]", "IQR", "mean ± std",
            "accuracy median [95% CI]", "macro-F1 median [95% CI]"]
    body = [[r["model"], r["policy"], f"{r['real_frac']:g}", str(r["n"]), _with_ci(r, HEADLINE),
             _num(r.get(f"{HEADLINE}.iqr")), f"{_num(r.get(f'{HEADLINE}.mean'))} ± {_num(r.get(f'{HEADLINE}.std'))}",
             _with_ci(r, "test_accuracy"), _with_ci(r, "test_macro_f1")] for r in summary.to_dict("records")]
    return head, body


#: how the report names each reading of the thesis's "validation loss" (docs/results.md)
READING_LABELS = {
    "test_cross_entropy": "test CE (evaluated model)",
    "thesis_heldout_loss_last": "held-out, last epoch",
    "thesis_heldout_loss_min": "held-out, min over epochs (selects on test)",
    "thesis_keras_val_loss_last": "Keras-style carve, last epoch",
    "thesis_rest_loss_last": "unsampled rest of train split, last epoch",
    "val_loss_min": "validation carve at the kept epoch",
}


def readings_rows(results: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """Per cell, the median [95% CI] of each reading of the thesis's "validation loss" the runs logged
    (``protocol=thesis``), beside the test cross-entropy; ``None`` when no run logged one."""
    present = [m for m in (*THESIS_READINGS, "val_loss_min") if m in results and results[m].notna().any()]
    if not any(m in THESIS_READINGS for m in present):
        return None
    columns = ["test_cross_entropy", *present]
    head = ["model", "policy", "real fraction", "n", *(READING_LABELS[m] + " median [95% CI]" for m in columns),
            "epoch of the held-out minimum (median)"]
    body = []
    for (model, policy, frac), cell in results.groupby(["model", "policy", "real_frac"], sort=False):
        row = [model, policy, f"{frac:g}", str(len(cell))]
        for metric in columns:
            s = summarize(cell[metric].dropna())
            row.append(f"{_num(s['median'])} [{_num(s['ci_low'])}, {_num(s['ci_high'])}]" if s["n"] else "")
        epochs = cell.get(f"{HELDOUT_LOSS}_min_epoch")
        row.append(_num(float(epochs.median()), 0) if epochs is not None and epochs.notna().any() else "")
        body.append(row)
    return head, body


def pair_rows(pairs: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per comparison: Hodges–Lehmann estimate and interval, Wilcoxon p raw and Holm-adjusted, effect size."""
    head = ["comparison", "n", "Δ cross-entropy HL [95% CI]", "p", "p (Holm)", "rank-biserial r",
            "Δ accuracy HL [95% CI]", "p (Holm)", "Δ macro-F1 HL [95% CI]", "p (Holm)"]
    body = []
    for r in pairs.to_dict("records"):
        what = (f"{r['model']} {r['policy']} vs {r['baseline_policy']} at {r['real_frac']:g}" if r["kind"] == "policy"
                else f"{r['model']} {r['policy']}: {r['real_frac']:g} vs {r['baseline_frac']:g}")
        cells = [what, str(int(r.get(f"{HEADLINE}.n", 0))), _hl(r, HEADLINE), _p_value(r.get(f"{HEADLINE}.p_value")),
                 _p_value(r.get(f"{HEADLINE}.p_holm")), _num(r.get(f"{HEADLINE}.rank_biserial"), 2)]
        for metric in ("test_accuracy", "test_macro_f1"):
            cells += [_hl(r, metric), _p_value(r.get(f"{metric}.p_holm"))]
        body.append(cells)
    return head, body


def _hl(row: dict[str, Any], metric: str) -> str:
    if _num(row.get(f"{metric}.hl")) == "":
        return ""
    low, high = _num(row.get(f"{metric}.hl_low")), _num(row.get(f"{metric}.hl_high"))
    return f"{_num(row[f'{metric}.hl'])} [{low or '–'}, {high or '–'}]"


def equivalence_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per (model, policy, fraction): its median and the real fraction it is worth."""
    head = ["model", "policy", "real fraction", "median cross-entropy", "real-scan equivalent [95% CI]"]
    body = [[r["model"], r["policy"], f"{r['real_frac']:g}", _num(r["median"]), describe(r)]
            for r in table.to_dict("records")]
    return head, body


def _emphasis(text: str) -> str:
    """Markdown's ``*x*`` as HTML ``<em>x</em>`` (the rest escaped), so the HTML report shows no asterisks."""
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", html.escape(text))


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body])


def _html_table(head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


# --- the report ------------------------------------------------------------------------------------
def write_report(folder: Path, data: SweepData, tables: Tables) -> list[Path]:
    """Write ``summary.csv``, ``pairs.csv``, ``equivalence.csv``, ``figures/*.png``, ``report.md`` and ``report.html``."""
    plt = pyplot()
    summary, pairs, equivalents = tables.summary, tables.pairs, tables.equivalents
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    summary.to_csv(folder / "summary.csv", index=False)
    pairs.to_csv(folder / "pairs.csv", index=False)
    equivalents.to_csv(folder / "equivalence.csv", index=False)
    figures: list[tuple[str, Path]] = []
    for model in data.models:
        dist = distribution_figure(data.results, model, data.policies, data.real_fracs)
        drawn = [(f"distribution_{model}.png", dist),
                 (f"median_vs_real_frac_{model}.png", median_figure(summary, model, data.policies,
                                                                    references=reference_lines(data.results, model)))]
        if len(equivalents[equivalents["model"] == model]):
            drawn.append((f"real_scan_equivalent_{model}.png", equivalence_figure(data.results, equivalents, model)))
        for name, fig in drawn:
            try:
                fig.savefig(folder / "figures" / name, dpi=120)
            finally:
                plt.close(fig)
            figures.append((name, folder / "figures" / name))
    run = data.parent.info
    total = len(data.models) * len(data.policies) * len(data.real_fracs) * data.simulations
    intro = (f"Sweep `{data.sweep_id}` (parent run `{run.run_id}`): models {', '.join(data.models)}; policies "
             f"{', '.join(data.policies)}; real fractions {', '.join(f'{f:g}' for f in data.real_fracs)}; "
             f"{data.simulations} simulations per cell. {len(data.results)} of {total} simulations finished"
             + (f", {data.failed} missing (failed or not run: rerun the same command to retry them)."
                if data.failed else "."))
    sections = [("Per cell", summary_rows(summary)), ("Paired comparisons", pair_rows(pairs))]
    readings = readings_rows(data.results)
    if readings is not None:  # protocol=thesis: each reading of its "validation loss" (docs/results.md)
        sections.insert(1, ("Readings of the thesis's validation loss", readings))
    if len(equivalents):
        sections.append(("Real-scan equivalent", equivalence_rows(equivalents)))
    elif tables.equivalence_refused and "none" in data.policies and len(data.real_fracs) > 1:
        sections.append(("Real-scan equivalent", (["why there is none"], [[tables.equivalence_refused]])))
    line = provenance_line(data.provenance)
    md = [f"# Sweep {data.sweep_id}", intro, line, DEFINITIONS]
    doc = [f"<h1>Sweep {html.escape(data.sweep_id)}</h1>", f"<p>{html.escape(intro)}</p>",
           f"<p><b>{html.escape(line)}</b></p>", f"<p>{_emphasis(DEFINITIONS)}</p>"]
    for title, (head, body) in sections:
        md += [f"## {title}", _md_table(head, body)]
        doc += [f"<h2>{title}</h2>", _html_table(head, body)]
    md.append("## Figures")
    doc.append("<h2>Figures</h2>")
    for name, path in figures:
        md.append(f"![{name}](figures/{name})")
        encoded = base64.b64encode(path.read_bytes()).decode()
        doc.append(f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}"></p>')
    (folder / "report.md").write_text("\n\n".join(md) + "\n")
    style = ("body{font-family:sans-serif;max-width:75em;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}img{max-width:100%}")
    (folder / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {data.sweep_id}"
                                        f"</title><style>{style}</style></head><body>{''.join(doc)}</body></html>\n")
    return [folder / "summary.csv", folder / "pairs.csv", *(p for _, p in figures), folder / "report.md",
            folder / "report.html"]
