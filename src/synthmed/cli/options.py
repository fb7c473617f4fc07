"""Click options generated from :class:`synthmed.config.Config`, shared by ``train`` and ``sweep``.

One ``--option`` per Config field (``real_frac`` → ``--real-frac``), so the CLI, the MLproject
parameters and the Python API cannot drift apart.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any, Callable, Sequence

import click

from synthmed.config import Config

def config_options(func: Callable[..., Any] | None = None, *,
                   only: Sequence[str] | None = None) -> Any:
    """Add one ``--option`` per Config field (default ``None`` = "not given").

    Used bare (``@config_options``) it adds every field; ``@config_options(only=[...])`` adds the
    named fields only (``synthmed generate`` takes what decides a synthetic run's images).
    """
    if func is None:
        return lambda f: config_options(f, only=only)
    unknown = set(only or ()) - set(Config.field_names())
    if unknown:
        raise ValueError(f"config_options(only=...) names unknown Config fields: {sorted(unknown)}")
    hints = typing.get_type_hints(Config)
    for f in reversed(fields(Config)):
        if only is not None and f.name not in only:
            continue
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
            func = click.option(*decl, f.name, type=BOOL, is_flag=False, flag_value="true", default=None,
                                help=help_text)(func)
        elif "choices" in f.metadata:
            func = click.option(flag, f.name, type=click.Choice(f.metadata["choices"]), default=None, help=help_text)(func)
        else:
            # optional numbers stay strings: '' (MLproject's "not set") must reach Config as None
            kind = str if len(args) < len(typing.get_args(tp)) else {int: int, float: float}.get(base, str)
            func = click.option(flag, f.name, type=kind, default=None, help=help_text)(func)
    return func


BOOL = click.Choice(["true", "false", "1", "0", "yes", "no"], case_sensitive=False)


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
