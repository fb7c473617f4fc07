"""``synthmed gradcam``: real-versus-synthetic Grad-CAM figures and metrics for a logged model.

Options that MLproject passes as empty strings (``--generator ""``) mean "not given", and the
boolean options take a value too (``--allow-external true``), so the ``gradcam`` entry point can
pass every parameter unconditionally.
"""

from __future__ import annotations

from typing import Any

import click

from synthmed.cli.options import BOOL
from synthmed.gradcam.compute import METHODS  # cheap: no torch at import
from synthmed.config import parse_bool



def _blank_is_none(value: str | None) -> str | None:
    return None if value is None or not value.strip() else value.strip()


def _whole(value: float, what: str) -> int:
    if not float(value).is_integer():
        raise click.BadParameter(f"{value!r} is not a whole number", param_hint=what)
    return int(value)


@click.command("gradcam")
@click.option("--model-uri", required=True, help="models:/NAME/VERSION, models:/NAME@alias or runs:/RUN_ID/model")
@click.option("--classes", default="", help="comma-separated true classes [default: the dataset's Grad-CAM classes (alzheimer_mri: Moderate_Demented,Non_Demented)]")
@click.option("--pairs", type=float, default=8, show_default=True, help="real source images per class")
@click.option("--generator", default="", help="generator for the variations [default: the run's generator]")
@click.option("--generator-options", default="", help="'key=value,...' for the generator")
@click.option("--method", type=click.Choice(list(METHODS)), default="gradcam", show_default=True,
              help="pytorch-grad-cam method")
@click.option("--target-layer", default="", help="dotted module path(s), comma-separated [default: the model's]")
@click.option("--images", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="split the real sources come from (test: nothing the model trained on)")
@click.option("--data-dir", default="", help="local dataset copy [default: the run's data_dir]")
@click.option("--run-id", default="", help="run to log into [default: the `mlflow run` run, else the model's run]")
@click.option("--cache-dir", default="", help="generation cache folder [default: the run's]")
@click.option("--allow-external", type=BOOL, is_flag=False, flag_value="true", default=None,
              help="allow generators that send images off this machine")
@click.option("--device", default="auto", show_default=True, help="torch device: auto, cpu, cuda, ...")
@click.option("--quiet", "-q", type=BOOL, is_flag=False, flag_value="true", default=None, help="print nothing")
def gradcam_command(**opts: Any) -> None:
    """Log Grad-CAM figures (real vs synthetic) and agreement/faithfulness metrics for a logged model."""
    from synthmed.gradcam import gradcam

    classes = [c.strip() for c in opts["classes"].split(",") if c.strip()] or None
    allow, quiet = opts["allow_external"], opts["quiet"] is not None and parse_bool(opts["quiet"])
    report = gradcam(
        opts["model_uri"],
        classes=classes,
        pairs=_whole(opts["pairs"], "--pairs"),
        generator=_blank_is_none(opts["generator"]),
        generator_options=_blank_is_none(opts["generator_options"]),
        method=opts["method"],
        target_layer=_blank_is_none(opts["target_layer"]),
        images=opts["images"],
        data_dir=_blank_is_none(opts["data_dir"]),
        run_id=_blank_is_none(opts["run_id"]),
        cache_dir=_blank_is_none(opts["cache_dir"]),
        allow_external=None if allow is None else parse_bool(allow),
        device=opts["device"],
        quiet=quiet,
    )
    if quiet:
        return
    click.echo(f"run {report.run_id}")
    for path in report.figures:
        click.echo(f"  figure  {path}")
    for key, value in sorted(report.metrics.items()):
        click.echo(f"  {key:56s} {value:.4f}")
