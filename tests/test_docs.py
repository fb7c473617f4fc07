"""The docs keep up with the code: every hookspec has a reference section (with a working example)
and a test; every CLI command has a reference entry; the site's config names pages that exist.

The click group is named in one place, the mkdocs-click directive of docs/reference/cli.md
(``:module:`` / ``:command:``); this test reads it from there.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click
import pytest

from synthmed import hookspecs
from synthmed.plugins import get_plugin_manager, registry

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
HOOKS_MD = DOCS / "reference" / "hooks.md"
CLI_MD = DOCS / "reference" / "cli.md"
HOOKS = sorted(name for name, obj in vars(hookspecs).items()
               if callable(obj) and hasattr(obj, "synthmed_spec"))


def test_hookspecs_are_found():
    assert "register_generators" in HOOKS and len(HOOKS) >= 4


def _hook_section(hook: str) -> str | None:
    text = HOOKS_MD.read_text()
    match = re.search(rf"^## `{hook}`\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1) if match else None


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_reference_section_with_an_example(hook):
    section = _hook_section(hook)
    assert section is not None, f"docs/reference/hooks.md has no '## `{hook}`' section"
    assert re.search(rf"```python\n.*def {hook}\(", section, re.S), f"{hook}: the section has no example implementation"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_example_registers(hook):
    """Run the section's example as a plugin module: what it registers is listed by the registry."""
    import types

    code = re.search(r"```python\n(.*?)```", _hook_section(hook) or "", re.S)
    assert code, f"{hook}: no example"
    module = types.ModuleType(f"docs_example_{hook}")
    exec(compile(code.group(1), f"docs/reference/hooks.md ({hook})", "exec"), module.__dict__)
    pm = get_plugin_manager(autoload=False)
    pm.register(module, name=module.__name__)
    pm.check_pending()
    classes = getattr(module, hook)()
    kind = hook.removeprefix("register_")
    assert classes and all(registry(kind, pm).get(cls.name) is cls for cls in classes)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_test(hook):
    kind = hook.removeprefix("register_")
    tests = [p.name for p in Path(__file__).parent.glob("test_*.py")
             if p.name not in ("test_docs.py", "test_plugins.py")
             and (hook in (text := p.read_text()) or f'registry("{kind}"' in text)]
    assert tests, f"no test besides the meta-tests mentions {hook} or registry('{kind}')"


def _click_group() -> click.Group:
    """The group that the mkdocs-click directive documents."""
    text = CLI_MD.read_text()
    module = re.search(r"^\s*:module:\s*(\S+)", text, re.M)
    command = re.search(r"^\s*:command:\s*(\S+)", text, re.M)
    assert module and command, "docs/reference/cli.md has no mkdocs-click :module: / :command:"
    group = getattr(importlib.import_module(module.group(1)), command.group(1))
    assert isinstance(group, click.Group), group
    return group


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    ctx = click.Context(group, info_name="synthmed")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        out.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            out.extend(_commands(command, (*prefix, name)))
    return out


def test_cli_reference_covers_every_command():
    """mkdocs-click renders the page; every command (nested ones too) has its own heading."""
    from mkdocs_click._docs import make_command_docs

    group = _click_group()
    text = CLI_MD.read_text()
    assert re.search(r"^\s*:list_subcommands:\s*true", text, re.M), "cli.md must list subcommands"
    depth = int((re.search(r"^\s*:depth:\s*(\d+)", text, re.M) or [0, 0])[1])
    rendered = "\n".join(make_command_docs(prog_name="synthmed", command=group, depth=depth,
                                          style="table", list_subcommands=True))
    headings = set(re.findall(r"^#+ (\S+)", rendered, re.M))
    commands = _commands(group)
    assert {"train", "plugins", "sweep"} <= {path[-1] for path, _ in commands}
    missing = [" ".join(path) for path, _ in commands if path[-1] not in headings]
    assert not missing, f"commands without a reference entry: {missing}"


def test_mkdocs_nav_names_existing_pages():
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name: tags
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=_Loader)

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(config["nav"]))
    assert all((DOCS / page).is_file() for page in listed), [p for p in listed if not (DOCS / p).is_file()]
    guides = {p.name for p in DOCS.glob("*.md")}
    assert guides <= set(listed), f"pages missing from the nav: {sorted(guides - set(listed))}"
