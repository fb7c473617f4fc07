"""``synthmed sweep`` and ``synthmed report``: Chapter 7's repeated simulations from the command line."""

from __future__ import annotations

from typing import Any

import click

from synthmed.cli.options import BOOL, build_config, config_options
from synthmed.config import parse_bool
from synthmed.tracking import names

# Config fields the sweep sets per child run: they have list options (or none) here instead.
_SWEPT = {"model": "--models", "policy": "--policies", "real_frac": "--real-fracs", "seed": "--seed",
          "register": None}
# Config fields that default to on for one run but off in a sweep (costly, not summarised).
_OFF_IN_SWEEPS = {"log_model": "log the trained model"}
# ...and those whose sweep default is "auto" (the library decides: see synthmed.sweep).
_AUTO_IN_SWEEPS = {"gradcam": "log a Grad-CAM panel in every simulation [default: auto = true, unless the "
                              "generator sends images off this machine (its panel would pay in every run)]"}
AUTO_BOOL = click.Choice(["auto", *BOOL.choices], case_sensitive=False)


def _sweep_config_options(func: Any) -> Any:
    """:func:`synthmed.cli.config_options` without the fields a sweep sets per child run."""
    func = config_options(func)
    func.__click_params__ = [p for p in func.__click_params__ if p.name not in _SWEPT]
    for param in func.__click_params__:
        if param.name in _OFF_IN_SWEEPS:
            param.help = f"{_OFF_IN_SWEEPS[param.name]} in every simulation [default: false in sweeps]"
        if param.name in _AUTO_IN_SWEEPS:
            param.help, param.type = _AUTO_IN_SWEEPS[param.name], AUTO_BOOL
    return func


def _is_true(value: str | None) -> bool:
    return value is not None and parse_bool(value)


@click.command("sweep")
@click.option("--models", default=None, help="Comma-separated model plugins [default: the config's model, cnn].")
@click.option("--policies", default=None, help="Comma-separated policies, e.g. none,basic,autoaugment,synthetic.")
@click.option("--real-fracs", default=None, help="Comma-separated real fractions, e.g. 0.3,0.4,0.5,0.6,0.7,0.8,1.0.")
@click.option("--simulations", type=click.IntRange(min=1), default=100, show_default=True,
              help="Simulations per cell; raising it later extends the same sweep.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Sweep seed; simulation i's seed derives from it and i [default: 0].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (1 = run in this process).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run simulations here (local) or as Ray tasks (ray).")
@click.option("--address", default=None, help="Ray cluster address ('auto' joins a running one; default: a local Ray).")
@click.option("--gpus-per-task", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPU share of each Ray task (0.25 = four simulations per GPU).")
@click.option("--parallel-simulations", default="auto", show_default=True,
              help="Simulations of one cell trained at once, models stacked (auto: 1 on CPU, by memory on CUDA).")
@click.option("--fail-fast", type=BOOL, is_flag=False, flag_value="true", default="false",
              help="Stop at the first failed simulation (default: record it and go on).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any Config field, e.g. --set val_frac=0.1 (repeatable).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file of Config fields for every run.")
@_sweep_config_options
def sweep_command(models: str | None, policies: str | None, real_fracs: str | None, simulations: int,
                  seed: int | None, workers: int, executor: str, address: str | None, gpus_per_task: float,
                  parallel_simulations: str, fail_fast: str, settings: tuple[str, ...], config_file: str | None, **given: Any) -> None:
    """Repeat training N times per (model, policy, real fraction) and compare (thesis Chapter 7).

    Rerunning the same command resumes: finished simulations are found in MLflow and skipped.
    """
    from synthmed.sweep import sweep

    parallel = None if parallel_simulations.strip().lower() in ("", "auto") else parallel_simulations.strip()
    if parallel is not None and (not parallel.isdigit() or int(parallel) < 1):
        raise click.BadParameter(f"{parallel_simulations!r} is not 'auto' or a count >= 1",
                                 param_hint="--parallel-simulations")
    for item in settings:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        if key in _SWEPT:
            hint = f"use {_SWEPT[key]}" if _SWEPT[key] else "sweeps never register models"
            raise click.BadParameter(f"{key} is set per simulation by the sweep — {hint}", param_hint="--set")
        given[key] = value.strip()
    on: dict[str, bool | None] = {}
    for name in (*_OFF_IN_SWEEPS, *_AUTO_IN_SWEEPS):  # not given: off, or None (the library's "auto")
        value, off = given.pop(name, None), given.pop(f"no_{name}", False)
        unset = None if name in _AUTO_IN_SWEEPS else False
        on[name] = False if off else unset if value in (None, "auto") else _is_true(value)
    config = build_config(config_file, given)
    result = sweep(config, models=models, policies=policies, real_fracs=real_fracs, simulations=simulations,
                   seed=seed, **on, workers=workers, executor=executor, address=address or None,
                   gpus_per_task=gpus_per_task, fail_fast=_is_true(fail_fast),
                   parallel_simulations=None if parallel is None else int(parallel))
    click.echo(f"sweep {result.sweep_id}  parent run {result.parent_run_id}  "
               f"ran {result.ran}, found {result.skipped} finished, {len(result.failed)} failed")
    _echo_summary(result.summary)
    click.echo(f"report: artifacts report/ of run {result.parent_run_id}; in the MLflow UI filter "
               f"tags.`{names.TAG_SWEEP_ID}` = '{result.sweep_id}' and group by tags {names.TAG_CELL}")


@click.command("report")
@click.argument("run_id")
@click.option("--output", type=click.Path(file_okay=False), default=None, help="Also write the report to this folder.")
def report_command(run_id: str, output: str | None) -> None:
    """Rebuild a sweep's summary, figures and report from MLflow and log them to its parent RUN_ID."""
    from synthmed.paths import staged_folder
    from synthmed.sweep.report import publish

    if output is None:
        published = publish(run_id)
    else:  # checked before any work; then all files or none (staged inside the folder, moved in at the end)
        fix = "free space there or give a folder this user can write: --output PATH"
        with staged_folder(output, f"report folder (--output) {output}", fix) as stage:
            published = publish(run_id, output=stage)
    data = published.data
    click.echo(f"sweep {data.sweep_id}: {len(data.results)} simulations finished, {data.failed} missing")
    _echo_summary(published.summary)
    click.echo(f"logged to run {run_id} under report/" + (f"; written to {output}" if output else ""))


def _echo_summary(summary: Any) -> None:
    key = names.HEADLINE
    for r in summary.to_dict("records"):
        if f"{key}.median" not in r:
            continue
        click.echo(f"  {r['model']:10s} {r['policy']:14s} {r['real_frac']:<5g} n={r['n']:<4d} "
                   f"median CE {r[f'{key}.median']:.4f} [{r[f'{key}.ci_low']:.4f}, {r[f'{key}.ci_high']:.4f}]")
