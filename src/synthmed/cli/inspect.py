"""``synthmed inspect-generator`` (what a generator makes for a synthetic run, without training) and
``synthmed audit-split`` (the split's near-twin leak and the lookup baseline)."""

from __future__ import annotations

from typing import Any

import click

from synthmed.cli.generate import GENERATE_FIELDS
from synthmed.cli.options import BOOL, build_config, config_options


REALISM = ("fd", "kid", "kid_std", "precision", "recall")  # printed beside their real-vs-real floor


def _strengths(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...]:
    if not value:
        return ()
    try:
        strengths = sorted({float(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. 0.1,0.3,0.5,0.7") from None
    if not strengths:
        raise click.BadParameter(f"{value!r} names no strength, e.g. 0.1,0.3,0.5,0.7")
    return tuple(strengths)


def _echo_metrics(metrics: dict[str, float]) -> None:
    """Realism as a table beside its floor, then fidelity and memorization (per-class P/R and copies left to MLflow)."""
    size = metrics.get("quality_set_size", float("nan"))
    click.echo(f"realism at equal set sizes ({size:.0f} images per set; floor: real half A vs disjoint real half B)")
    click.echo(f"  {'metric':12s} {'synthetic vs A':>16s} {'floor: B vs A':>16s}")
    for name in REALISM:
        if f"quality_{name}" in metrics:
            value, floor = metrics[f"quality_{name}"], metrics.get(f"quality_{name}_floor", float("nan"))
            click.echo(f"  {name:12s} {value:16.4f} {floor:16.4f}")
    click.echo("label fidelity (fidelity_real: the reference on the real sources) and memorization")
    copies = ("memorization_near_copies_pixel", "memorization_near_copies_feature")
    for key in sorted(metrics):
        if key in copies or not key.startswith(("quality_", "memorization_near_copies_")):
            click.echo(f"  {key:40s} {metrics[key]:.4f}")


@click.command("inspect-generator")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (the same file `synthmed train --config` takes); options below override it")
@click.option("--strengths", callback=_strengths,
              help="also the fidelity–diversity curve at these strengths, e.g. 0.1,0.3,0.5,0.7,0.9 (a variation "
                   "generator's: one with a 'strength' option)")
@click.option("--curve-images", default=64, show_default=True, type=click.IntRange(1, 100_000),
              help="sources per class on the curve (seeded, stratified; every one of a class with fewer), one "
                   "variation each")
@config_options(only=(*GENERATE_FIELDS, "experiment", "device"))
def inspect_generator_command(config_file: str | None, strengths: tuple[float, ...], curve_images: int,
                              **given: Any) -> None:
    """Log realism, label fidelity and memorization checks of a synthetic run's images to a new MLflow run."""
    from synthmed.inspection.run import inspect_generator

    report = inspect_generator(build_config(config_file, given), strengths=strengths, curve_images=curve_images)
    click.echo(f"run {report.run_id}")
    _echo_metrics(report.metrics)
    if report.curve is not None:
        click.echo(f"\nfidelity–diversity curve: {report.curve.note()}")
        click.echo(report.curve.markdown())


AUDIT_FIELDS = ("dataset", "data_dir", "revision", "image_size", "skip_bad_images", "split", "groups", "twin_threshold",
                "test_frac", "split_seed", "val_frac", "cache_dir", "experiment", "quiet")


def _fractions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        fracs = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. 0.05,0.1,0.3,1") from None
    if not fracs or any(not 0 < f <= 1 for f in fracs):
        raise click.BadParameter(f"{value!r}: each fraction must be in (0, 1]")
    return fracs


@click.command("audit-split")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (the same file `synthmed train --config` takes); options below override it")
@click.option("--fractions", default="0.05,0.1,0.3,1", show_default=True, callback=_fractions,
              help="real fractions at which the 1-NN lookup is scored")
@click.option("--simulations", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="seeded samples per fraction (medians are reported)")
@click.option("--features", type=BOOL, default=True, show_default=True,
              help="also search the reference classifier's features (trains it once per dataset and size, cached)")
@click.option("--pairs", default=12, show_default=True, type=click.IntRange(0, 200),
              help="closest test/training pairs shown in the figure")
@click.option("--output", type=click.Path(file_okay=False), help="also write the report and figures to this folder")
@config_options(only=AUDIT_FIELDS)
def audit_split_command(config_file: str | None, fractions: tuple[float, ...], simulations: int, features: str | bool,
                        pairs: int, output: str | None, **given: Any) -> None:
    """Measure the split's near-twin leak and what a 1-NN lookup with no learning scores; log it to MLflow."""
    from pathlib import Path

    from synthmed.config import parse_bool
    from synthmed.inspection.run import run_audit

    config = build_config(config_file, given)
    out = Path(output) if output else None
    if out is not None and out.exists() and not out.is_dir():
        raise click.BadParameter(f"{output!r} is a file, not a folder", param_hint="--output")
    run_id, audit = run_audit(config, fractions=fractions, simulations=simulations, features=parse_bool(features),
                              pairs=pairs, output=out)
    click.echo(f"run {run_id}")
    click.echo(audit.markdown())
