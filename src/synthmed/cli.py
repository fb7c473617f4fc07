"""The ``synthmed`` command line: train, plugins (and generate, cache, sweep, report, gradcam).

``synthmed train`` has one option per :class:`synthmed.config.Config` field (``real_frac`` →
``--real-frac``), so the CLI, the MLproject parameters and the Python API cannot drift apart.
"""

from __future__ import annotations

import sys
import typing
from dataclasses import fields
from typing import Any, Callable

import click

from synthmed.config import Config
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


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one ``--option`` per Config field (default ``None`` = "not given")."""
    hints = typing.get_type_hints(Config)
    for f in reversed(fields(Config)):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if args else tp
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} [default: {f.default}]"
        if base is bool:
            # `--quiet` alone means true; `--quiet false` (MLproject passes values) and `--no-quiet` work too
            decl = [flag] + (["-q"] if f.name == "quiet" else [])
            func = click.option(f"--no-{flag[2:]}", f"no_{f.name}", is_flag=True, default=False,
                                help=f"same as {flag} false")(func)
            func = click.option(*decl, f.name, type=_BOOL, is_flag=False, flag_value="true", default=None,
                                help=help_text)(func)
        elif "choices" in f.metadata:
            func = click.option(flag, f.name, type=click.Choice(f.metadata["choices"]), default=None, help=help_text)(func)
        else:
            # optional numbers stay strings: '' (MLproject's "not set") must reach Config as None
            kind = str if len(args) < len(typing.get_args(tp)) else {int: int, float: float}.get(base, str)
            func = click.option(flag, f.name, type=kind, default=None, help=help_text)(func)
    return func


_BOOL = click.Choice(["true", "false", "1", "0", "yes", "no"], case_sensitive=False)


def build_config(config_file: str | None, given: dict[str, Any]) -> Config:
    """Config from an optional YAML file, then the options the user actually gave."""
    given = dict(given)
    for key in [k for k in given if k.startswith("no_")]:
        if given.pop(key):
            if given.get(key[3:]) not in (None, "false", "0", "no"):
                raise click.UsageError(f"--{key[3:].replace('_', '-')} and --{key.replace('_', '-')} contradict each other")
            given[key[3:]] = "false"
    overrides = {k: v for k, v in given.items() if v is not None}
    if config_file:
        return Config.from_yaml(config_file, **overrides)
    return Config.from_mapping(overrides)


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
