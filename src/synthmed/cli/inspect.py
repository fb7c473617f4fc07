"""``synthmed inspect-generator``: check what a generator makes for a synthetic run, without training."""

from __future__ import annotations

from typing import Any

import click

from synthmed.cli.generate import GENERATE_FIELDS
from synthmed.cli.options import build_config, config_options


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
