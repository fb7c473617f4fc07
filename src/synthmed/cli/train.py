"""``synthmed train`` (one experiment) and ``synthmed plugins`` (what is installed, from where)."""

from __future__ import annotations

from typing import Any

import click

from synthmed.cli.options import build_config, config_options


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of Config fields; options given here override it.")
@config_options
def train(config_file: str | None, **given: Any) -> None:
    """Train one model on a stratified real fraction under a policy; log it to MLflow."""
    from synthmed.tracking.names import LOOKUP_ACCURACY, LOOKUP_CE, PRIOR_CE, THESIS_READINGS, TRAIN_SUMMARY
    from synthmed.training import train as run_training

    config = build_config(config_file, given)
    result = run_training(config)
    click.echo(f"run {result.run_id}  model {result.model_uri}"
               + (f"  registered {config.registered_model_name} v{result.registered_version}" if result.registered_version else ""))
    for key in TRAIN_SUMMARY:
        click.echo(f"  {key:24s} {result.metrics[key]:.4f}")
    readings = [k for k in THESIS_READINGS if k in result.metrics]
    if readings:  # protocol=thesis: each reading of the thesis's "validation loss" under its own name
        click.echo("  the thesis's 'validation loss', read each way it allows (docs/results.md):")
        for key in readings:
            click.echo(f"  {key:32s} {result.metrics[key]:.4f}")
    if LOOKUP_CE in result.metrics:
        m = result.metrics
        click.echo(f"  beside it: a 1-NN pixel lookup (no learning) scores accuracy {m[LOOKUP_ACCURACY]:.4f}, "
                   f"cross-entropy {m[LOOKUP_CE]:.4f}; the class prior's cross-entropy is {m[PRIOR_CE]:.4f}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List every dataset, policy, model and generator, with the distribution that provides it."""
    import json

    from synthmed.plugins import KINDS, default_plugin_manager, registry

    pm = default_plugin_manager()
    table = {kind: [{"name": e.name, "provider": e.provider, "class": f"{e.cls.__module__}.{e.cls.__qualname__}"}
                    for e in registry(kind, pm).entries()] for kind in KINDS}
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for kind, entries in table.items():
        click.echo(f"{kind}:")
        for e in entries:
            click.echo(f"  {e['name']:16s} {e['provider']}")
