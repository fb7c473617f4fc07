"""The ``synthmed`` command line: the group, and the one place where user mistakes become clean errors.

Each command family lives in its own module beside this one — ``train`` and ``plugins``
(:mod:`.train`), ``generate`` and ``cache`` (:mod:`.generate`), ``sweep`` and ``report``
(:mod:`.sweep`), ``gradcam`` (:mod:`.gradcam`), ``inspect-generator`` (:mod:`.inspect`), ``predict`` (:mod:`.predict`) — with options generated from
:class:`synthmed.config.Config` (:mod:`.options`), so the CLI, the MLproject parameters and the
Python API cannot drift apart. Commands raise :class:`~synthmed.errors.SynthmedError`; only the
group below turns it into a ``click.ClickException``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from synthmed import interrupts
from synthmed.errors import SynthmedError


class _Group(click.Group):
    """Turns user mistakes (SynthmedError, MLflow 'not found' errors) into clean CLI errors, and a stop
    signal (SIGTERM, SIGINT, SIGHUP) into a clean end: exit ``128 + signal`` after one line (:mod:`synthmed.interrupts`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with interrupts.handling():
                return super().invoke(ctx)
        except interrupts.Stopped as exc:
            kept = interrupts.kept()
            click.echo(f"synthmed: {exc}; its MLflow runs are marked KILLED; kept: "
                       f"{'; '.join(kept) if kept else 'every finished cache entry, fit and run'}. "
                       "Rerun the same command to resume.", err=True)
            sys.exit(exc.exit_code)
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
    from synthmed.runtime import tune_memory

    tune_memory()  # before torch allocates anything (see use_huge_pages)


def _add_commands() -> None:
    """Each command family's module imports cheaply (torch, mlflow load when a command runs)."""
    from synthmed.cli.generate import cache, generate
    from synthmed.cli.gradcam import gradcam_command
    from synthmed.cli.inspect import audit_split_command, inspect_generator_command
    from synthmed.cli.predict import predict_command
    from synthmed.cli.sweep import report_command, sweep_command
    from synthmed.cli.train import plugins, train

    for command in (train, plugins, generate, cache, inspect_generator_command, audit_split_command, sweep_command, report_command,
                    gradcam_command, predict_command):
        main.add_command(command)


_add_commands()

from synthmed.cli.options import build_config, config_options  # noqa: E402  (re-exported for scripts)

__all__ = ["build_config", "config_options", "main"]
