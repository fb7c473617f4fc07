"""The ``synthmed`` command line: train, plugins (and generate, cache, sweep, report, gradcam).

``synthmed train`` has one option per :class:`synthmed.config.Config` field (``real_frac`` →
``--real-frac``), so the CLI, the MLproject parameters and the Python API cannot drift apart.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from synthmed._cli_options import build_config, config_options
from synthmed.errors import SynthmedError


class _Group(click.Group):
    """Turns user mistakes (SynthmedError, MLflow 'not found' errors) into clean CLI errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SynthmedError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if "mlflow" in sys.modules:
                from mlflow.exceptions import MlflowException

                if isinstance(exc, MlflowException):
                    raise click.ClickException(f"MLflow: {exc.message}") from None
            raise


@click.group(cls=_Group)
@click.version_option(package_name="synthmed")
def main() -> None:
    """Can synthetic images stand in for real medical scans? Experiments tracked in MLflow."""


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of Config fields; options given here override it.")
@config_options
def train(config_file: str | None, **given: Any) -> None:
    """Train one model on a stratified real fraction under a policy; log it to MLflow."""
    from synthmed.training import train as run_training

    config = build_config(config_file, given)
    result = run_training(config)
    click.echo(f"run {result.run_id}  model {result.model_uri}"
               + (f"  registered {config.registered_model_name} v{result.registered_version}" if result.registered_version else ""))
    for key in ("test_cross_entropy", "test_accuracy", "test_balanced_accuracy", "test_macro_f1"):
        click.echo(f"  {key:24s} {result.metrics[key]:.4f}")


@main.command()
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


def _add_commands() -> None:
    """The other commands live beside the concept they drive; their modules import cheaply."""
    from synthmed._cli_generate import cache, generate
    from synthmed._cli_gradcam import gradcam_command
    from synthmed._cli_sweep import report_command, sweep_command

    for command in (generate, cache, sweep_command, report_command, gradcam_command):
        main.add_command(command)


_add_commands()

if __name__ == "__main__":
    main()
