"""``synthmed inspect-generator`` (what a generator makes for a synthetic run, without training) and
``synthmed audit-split`` (the split's near-twin leak and the lookup baseline)."""

from __future__ import annotations

from typing import Any

import click

from synthmed.cli.generate import GENERATE_FIELDS
from synthmed.cli.options import BOOL, build_config, config_options


@click.command("inspect-generator")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (the same file `synthmed train --config` takes); options below override it")
@config_options(only=(*GENERATE_FIELDS, "experiment", "device"))
def inspect_generator_command(config_file: str | None, **given: Any) -> None:
    """Log realism, label fidelity and memorization checks of a synthetic run's images to a new MLflow run."""
    from synthmed.inspection.run import inspect_generator

    report = inspect_generator(build_config(config_file, given))
    click.echo(f"run {report.run_id}")
    for key in sorted(report.metrics):
        if "_" in key and not key.startswith(("quality_precision_", "quality_recall_", "memorization_near_copies_")):
            click.echo(f"  {key:40s} {report.metrics[key]:.4f}")


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
