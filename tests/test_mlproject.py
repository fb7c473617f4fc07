"""MLproject parameters map one to one onto the CLI options (MLflow's own examples once shipped a typo)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from synthmed.cli import main
from synthmed.config import Config

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "MLproject").read_text())
VALID_TYPES = {"string", "float", "path", "uri"}


def _options(command: click.Command) -> set[str]:
    return {opt.lstrip("-").replace("-", "_") for p in command.params for opt in p.opts if opt.startswith("--")}


def test_conda_env_exists():
    assert (REPO / SPEC["conda_env"]).is_file()


@pytest.mark.parametrize("entry", sorted(SPEC["entry_points"]))
def test_entry_point_parameters_match_cli(entry):
    ep = SPEC["entry_points"][entry]
    command_line = ep["command"].split()
    assert command_line[0] == "synthmed"
    cli_command = main.commands[command_line[1]]
    options = _options(cli_command)
    for name, spec in ep.get("parameters", {}).items():
        assert spec["type"] in VALID_TYPES, f"{entry}.{name}: type {spec['type']!r}"
        flag = "--" + name.replace("_", "-")
        assert name in options, f"{entry}: parameter {name} has no CLI option {flag}"
        assert f"{flag} {{{name}}}" in ep["command"], f"{entry}: {name} is not passed as {flag} {{{name}}}"
    placeholders = {tok.strip("{}") for tok in command_line if tok.startswith("{")}
    assert placeholders <= set(ep.get("parameters", {})), f"{entry}: command uses undeclared parameters"


def test_main_covers_every_config_field_and_defaults_agree():
    params = SPEC["entry_points"]["main"]["parameters"]
    assert set(params) == set(Config.field_names())
    mapped = Config.from_mapping({k: ("" if v["default"] is None else str(v["default"])) for k, v in params.items()})
    assert mapped == Config(), "MLproject defaults differ from Config defaults"
