"""The generator leaderboard of docs/generators.md, rebuilt by one command.

    PYTHONPATH=src python benchmarks/generator_leaderboard.py --data-dir ../shared/data/alzheimer_mri \\
        --image-size 64 --real-frac 0.3 --generators elastic,pca,ddpm,ldm --simulations 6 \\
        --splits grouped,given --epochs 20 --experiment leaderboard \\
        --output benchmarks/results/leaderboard --docs docs/generators.md

**Quality** (``--quality-split``, default the first of ``--splits``): one full ``synthmed
inspect-generator`` per generator — every synthetic image of a run at ``--real-frac`` — giving fit
and generation time, per-class label fidelity beside the reference's on the real sources, FD and KID
at equal set sizes beside the real-vs-real floor, k-NN precision/recall (with floors) and near copies
(with the real sources' own rate).

**Comparisons** (each split; ``budget=steps``, so every cell takes the optimizer steps of ``none`` at
1.0): ``none`` at ``--real-frac`` and at ``--equivalent-fracs`` (the real-scan curve), ``oversample``
and ``mri`` at ``--real-frac``, and ``synthetic`` with each *learned* generator, all sweeps sharing one
seed so simulation *i* of every cell trains on the same real sample. From their pooled results: median
test cross-entropy [95% CI] per cell, Hodges–Lehmann differences against ``none`` and ``oversample``
with CIs and Holm-adjusted exact Wilcoxon p-values (one family per split), real-scan equivalents with
bootstrap CIs, and the 1-NN lookup's and the class prior's lines. Rerunning resumes every sweep.

Writes ``leaderboard.md`` and ``leaderboard.json`` to ``--output``; with ``--docs FILE`` the block
between ``<!-- leaderboard:begin -->`` and ``<!-- leaderboard:end -->`` in that file is replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- leaderboard:begin -->", "<!-- leaderboard:end -->"
CONTROLS = ("oversample", "mri")  # policies every generator is set beside


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="alzheimer_mri")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--real-frac", type=float, default=0.3)
    ap.add_argument("--equivalent-fracs", default="0.6,1.0", help="extra real fractions of `none` (equivalents)")
    ap.add_argument("--generators", default="elastic,pca,ddpm,ldm")
    ap.add_argument("--generator-options", action="append", default=[], metavar="NAME:k=v,k=v",
                    help="options of one generator, e.g. ldm:preset=cpu (repeatable)")
    ap.add_argument("--simulations", type=int, default=6)
    ap.add_argument("--splits", default="grouped,given")
    ap.add_argument("--quality-split", default=None)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--experiment", default="leaderboard")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other Config field")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: quality, comparisons")
    ap.add_argument("--output", default="benchmarks/results/leaderboard")
    ap.add_argument("--docs", default=None)
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def base_config(args: argparse.Namespace) -> Any:
    from synthmed.config import Config

    fields: dict[str, Any] = {"dataset": args.dataset, "data_dir": args.data_dir, "image_size": args.image_size,
                              "real_frac": args.real_frac, "epochs": args.epochs, "seed": args.seed,
                              "experiment": args.experiment, "budget": "steps", "gradcam": False,
                              "log_model": False, "quiet": args.quiet}
    if args.cache_dir:
        fields["cache_dir"] = args.cache_dir
    for item in args.set:
        key, _, value = item.partition("=")
        fields[key.strip()] = value.strip()
    return Config.from_mapping(fields)


def generator_options(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in args.generator_options:
        name, sep, options = item.partition(":")
        if not sep:
            raise SystemExit(f"--generator-options {item!r}: expected NAME:k=v,k=v")
        out[name.strip()] = options.strip()
    return out


# --- quality --------------------------------------------------------------------------------------
def quality(args: argparse.Namespace, config: Any, generators: list[str], options: dict[str, str]) -> list[dict]:
    """One full inspect-generator per generator; the leaderboard's quality columns from its run."""
    import mlflow

    from synthmed.inspection.run import inspect_generator
    from synthmed.inspection import metric_suffix
    from synthmed.plugins import default_plugin_manager, registry

    rows = []
    for name in generators:
        cfg = config.replace(generator=name, generator_options=options.get(name, ""))
        start = time.perf_counter()
        report = inspect_generator(cfg)
        seconds = time.perf_counter() - start
        run = mlflow.MlflowClient().get_run(report.run_id)
        m = run.data.metrics
        classes = [metric_suffix(c) for c in _classes(cfg)]
        rows.append({
            "generator": name, "options": options.get(name, ""), "run_id": report.run_id,
            "learns": bool(registry("generators", default_plugin_manager()).get(name).learns),
            "fit_seconds": m.get("generator_fit_seconds"), "fit_from_cache": m.get("generator_fit_from_cache"),
            "generation_seconds": m.get("synthetic_generation_seconds"), "images": m.get("synthetic_images"),
            "cache_hits": m.get("synthetic_cache_hits"), "wall_seconds": seconds,
            "fidelity": {c: m.get(f"fidelity_{c}") for c in classes},
            "fidelity_real": {c: m.get(f"fidelity_real_{c}") for c in classes},
            "fidelity_real_blurred": {c: m.get(f"fidelity_real_blurred_{c}") for c in classes},
            **{k: m.get(k) for k in ("quality_set_size", "quality_fd", "quality_fd_floor", "quality_kid",
                                     "quality_kid_floor", "quality_precision", "quality_precision_floor",
                                     "quality_recall", "quality_recall_floor", "memorization_near_copies_pixel",
                                     "memorization_near_copies_pixel_floor", "memorization_near_copies_feature",
                                     "memorization_near_copies_feature_floor", "memorization_source_distance")},
        })
    return rows


def _classes(config: Any) -> tuple[str, ...]:
    from synthmed.data.loading import load_splits

    return tuple(load_splits(config).classes)


# --- comparisons ----------------------------------------------------------------------------------
def comparisons(args: argparse.Namespace, config: Any, learned: list[str], options: dict[str, str],
                split: str) -> dict[str, Any]:
    """The sweeps of one split, pooled: summary, pairs (Holm within the split) and equivalents."""
    import pandas as pd

    import synthmed
    from synthmed.stats import build_tables
    from synthmed.sweep.results import load_sweep
    from synthmed.tracking import names

    cfg = config.replace(split=split)
    fracs = sorted({args.real_frac, *(float(f) for f in args.equivalent_fracs.split(",") if f.strip())})
    common = {"simulations": args.simulations, "seed": args.seed, "gradcam": False}
    frames, parents = [], {}
    plan: list[tuple[str, Any, str, list[float]]] = [("none", cfg, "none", fracs),
                                                    ("controls", cfg, ",".join(CONTROLS), [args.real_frac])]
    plan += [(f"synthetic-{g}", cfg.replace(generator=g, generator_options=options.get(g, "")), "synthetic",
              [args.real_frac]) for g in learned]
    for label, c, policies, real_fracs in plan:
        result = synthmed.sweep(c, policies=policies, real_fracs=real_fracs, **common)
        parents[label] = result.parent_run_id
        frame = load_sweep(result.parent_run_id).results.copy()
        if label.startswith("synthetic-"):
            frame["policy"] = label
        frames.append(frame)
    results = pd.concat(frames, ignore_index=True)
    controls = [(f"synthetic-{g}", control) for g in learned for control in CONTROLS]
    tables = build_tables(results, names.SWEEP_METRICS, headline=names.HEADLINE, controls=controls,
                          baseline_frac=max(fracs), budget="steps")
    return {"split": split, "parents": parents, "results": results, "tables": tables,
            "lookup": _median(results, names.LOOKUP_CE, args.real_frac),
            "prior": _median(results, names.PRIOR_CE, args.real_frac)}


def _median(results: Any, column: str, frac: float) -> float | None:
    if column not in results:
        return None
    values = results.loc[(results["real_frac"] - frac).abs() < 1e-9, column].dropna()
    return float(values.median()) if len(values) else None


# --- rendering ------------------------------------------------------------------------------------
def _n(v: Any, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _s(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


def quality_markdown(rows: list[dict], args: argparse.Namespace, split: str) -> str:
    classes = list(rows[0]["fidelity"]) if rows else []
    lines = [f"**Quality** — `{args.dataset}`, split `{split}`, real fraction {args.real_frac:g}, {args.image_size} px, "
             f"seed {args.seed}: every synthetic image of the run (full `inspect-generator`). Fidelity: share the "
             "reference classifier gives the intended class (in brackets: its share on the real sources; after the "
             "semicolon, on the real sources blurred by 1.25% of the side — the sharpness calibration). FD/KID: "
             "reference-classifier features, at the equal set size m, beside the real-vs-real floor.", ""]
    head = ["generator", "fit s", "generation s", *[f"fidelity {c}" for c in classes], "m", "FD (floor)",
            "KID (floor)", "precision (floor)", "recall (floor)", "near copies px / feature (real's)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        fit = "—" if not r["learns"] else _s(r["fit_seconds"]) + (" (cache)" if r["fit_from_cache"] else "")
        gen = _s(r["generation_seconds"]) + (" (cache)" if r["cache_hits"] and not r["generation_seconds"] else "")
        fid = [f"{_n(r['fidelity'][c], 2)} ({_n(r['fidelity_real'][c], 2)}; {_n(r['fidelity_real_blurred'][c], 2)})"
               for c in classes]
        name = f"`{r['generator']}`" + (f" `{r['options']}`" if r["options"] else "")
        lines.append("| " + " | ".join([
            name, fit, gen, *fid, _s(r["quality_set_size"]),
            f"{_n(r['quality_fd'])} ({_n(r['quality_fd_floor'])})", f"{_n(r['quality_kid'])} ({_n(r['quality_kid_floor'])})",
            f"{_n(r['quality_precision'], 2)} ({_n(r['quality_precision_floor'], 2)})",
            f"{_n(r['quality_recall'], 2)} ({_n(r['quality_recall_floor'], 2)})",
            f"{_n(r['memorization_near_copies_pixel'], 3)} / {_n(r['memorization_near_copies_feature'], 3)} "
            f"({_n(r['memorization_near_copies_pixel_floor'], 3)} / {_n(r['memorization_near_copies_feature_floor'], 3)})",
        ]) + " |")
    return "\n".join(lines)


def comparison_markdown(block: dict[str, Any], args: argparse.Namespace) -> str:
    from synthmed.stats.equivalence import describe
    from synthmed.tracking import names

    t = block["tables"]
    metric = names.HEADLINE
    summary = t.summary.set_index(["policy", "real_frac"])
    pairs = t.pairs[(t.pairs["kind"] == "policy") & ((t.pairs["real_frac"] - args.real_frac).abs() < 1e-9)]
    equiv = {r["policy"]: r for r in t.equivalents.to_dict("records")
             if abs(r["real_frac"] - args.real_frac) < 1e-9} if len(t.equivalents) else {}

    def pair(policy: str, base: str) -> str:
        row = pairs[(pairs["policy"] == policy) & (pairs["baseline_policy"] == base)]
        if row.empty:
            return "—"
        r = row.iloc[0]
        signed = lambda v: "—" if v is None or v != v else f"{v:+.3f}"  # noqa: E731  (NaN: too few simulations)
        return (f"{signed(r[f'{metric}.hl'])} [{signed(r[f'{metric}.hl_low'])}, {signed(r[f'{metric}.hl_high'])}], "
                f"p_Holm {r[f'{metric}.p_holm']:.2g}")

    lines = [f"**Matched-steps comparison, split `{block['split']}`** — {args.simulations} simulations, real fraction "
             f"{args.real_frac:g}, `cnn`, {args.image_size} px, {args.epochs} epochs of `none` at "
             f"{max(float(f) for f in [args.real_frac, *args.equivalent_fracs.split(',')]):g} as every cell's steps, "
             f"protocol `sound`. Test cross-entropy (lower is better); differences are Hodges–Lehmann "
             "[95% CI], exact Wilcoxon p Holm-adjusted across the split's comparisons. "
             f"Lines: class prior {_n(block['prior'])}, 1-NN lookup {_n(block['lookup'])}.", ""]
    head = ["cell", "n", "median [95% CI]", "accuracy", "vs `none`", "vs `oversample`", "real-scan equivalent"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = ["none", *CONTROLS, *sorted(p for p in summary.index.get_level_values(0).unique() if p.startswith("synthetic-"))]
    for policy in order:
        key = (policy, args.real_frac)
        if key not in summary.index:
            continue
        s = summary.loc[key]
        lines.append("| " + " | ".join([
            f"`{policy}`", _s(s["n"]),
            f"{s[f'{metric}.median']:.3f} [{s[f'{metric}.ci_low']:.3f}, {s[f'{metric}.ci_high']:.3f}]",
            _n(s.get("test_accuracy.median"), 3), "—" if policy == "none" else pair(policy, "none"),
            pair(policy, "oversample") if policy.startswith("synthetic-") else "—",
            describe(equiv[policy]) if policy in equiv else "—",
        ]) + " |")
    for frac in sorted(f for p, f in summary.index if p == "none" and abs(f - args.real_frac) > 1e-9):
        s = summary.loc[("none", frac)]
        lines.append(f"| `none` at {frac:g} | {_s(s['n'])} | {s[f'{metric}.median']:.3f} [{s[f'{metric}.ci_low']:.3f}, "
                     f"{s[f'{metric}.ci_high']:.3f}] | {_n(s.get('test_accuracy.median'), 3)} | — | — | — |")
    return "\n".join(lines)


def replace_block(path: Path, text: str) -> None:
    content = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    block = f"{BEGIN}\n{text}\n{END}"
    if not pattern.search(content):
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to replace")
    path.write_text(pattern.sub(lambda _: block, content))


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    from synthmed.plugins import default_plugin_manager, registry

    config = base_config(args)
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    options = generator_options(args)
    found = registry("generators", default_plugin_manager())
    learned = [g for g in generators if found.get(g).learns]
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    command = "PYTHONPATH=src python benchmarks/generator_leaderboard.py " + " ".join(
        a if re.fullmatch(r"[\w./:=,-]+", a) else repr(a) for a in (argv if argv is not None else __import__("sys").argv[1:]))
    parts = [f"Rebuilt by `{command}`."]
    record: dict[str, Any] = {"command": command, "args": vars(args)}
    if "quality" not in skip:
        qsplit = args.quality_split or splits[0]
        rows = quality(args, config.replace(split=qsplit), generators, options)
        parts.append(quality_markdown(rows, args, qsplit))
        record["quality"] = rows
    if "comparisons" not in skip:
        record["comparisons"] = []
        for split in splits:
            block = comparisons(args, config, learned, options, split)
            parts.append(comparison_markdown(block, args))
            record["comparisons"].append({"split": split, "parents": block["parents"],
                                          "pairs": block["tables"].pairs.to_dict("records"),
                                          "summary": block["tables"].summary.to_dict("records"),
                                          "lookup": block["lookup"], "prior": block["prior"]})
    text = "\n\n".join(parts)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(text + "\n")
    (out / "leaderboard.json").write_text(json.dumps(record, indent=2, default=str))
    if args.docs:
        replace_block(Path(args.docs), text)
    print(text)
    return text


if __name__ == "__main__":
    main()
