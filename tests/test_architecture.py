"""The house's rules that import-linter cannot state: where names are spelled, what stays lazy and why."""

from __future__ import annotations

import ast
import importlib.util
import re
import resource
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from synthmed.tracking import names

SRC = Path(__file__).resolve().parents[1] / "src" / "synthmed"
TRACKING = SRC / "tracking"

#: What ``synthmed --help`` must not import, and why each import stays inside the functions that need it.
LAZY = {
    "torch": "a second or more to import; every command that computes imports it when it runs",
    "torchvision": "imports torch",
    "mlflow": "about a second; only commands that log or read runs need it",
    "numpy": "the statistics and figures need it, the command line does not",
    "pandas": "sweep reports only",
    "matplotlib": "figures only",
    "scipy": "statistics only",
    "timm": "the timm model factories only",
    "datasets": "Hugging Face datasets: loading the hub copy only",
    "pytorch_grad_cam": "Grad-CAM only",
}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of a module that is not a docstring, with its line."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


TAGS = {value for key, value in vars(names).items() if key.startswith("TAG_")}


#: strings that spell a tag's text for another purpose, and why
NOT_TAGS = {"synthmed.sweep/": "the salt of simulation seeds (sweep/spec.py); changing it would change every seed"}


def _names_a_module(word: str) -> bool:
    """``synthmed.a.b`` or an attribute of it (``synthmed.a.b.func``), below the package itself."""
    parts = word.split(".")
    return any(_is_module(".".join(parts[:n])) for n in range(len(parts), 1, -1))


def _tag_words(text: str) -> set[str]:
    """The ``synthmed.*`` words of a string that are tags, or that name no module (a tag written in place)."""
    if text in NOT_TAGS:
        return set()
    words = set(re.findall(r"synthmed\.[a-z_]+(?:\.[a-z_]+)*", text))
    return {w for w in words if w in TAGS or not _names_a_module(w)}


def test_a_tag_name_is_spelled_only_in_the_tracking_package():
    assert len(TAGS) >= 20  # not vacuous: the names module holds the tags
    found = [f"{path.relative_to(SRC)}:{line}: {text!r}"
             for path in sorted(SRC.rglob("*.py")) if TRACKING not in path.parents
             for line, text in _strings(ast.parse(path.read_text())) if _tag_words(text)]
    assert not found, "tag names belong in synthmed/tracking/names.py:\n" + "\n".join(found)


def test_the_tag_check_catches_a_tag_written_in_place():
    source = 'a = "synthmed.new_tag"\nb = f"tags.`synthmed.sweep_id` = {x}"\nc = "synthmed.training.loop"\n'
    flagged = [text for _, text in _strings(ast.parse(source)) if _tag_words(text)]
    assert flagged == ["synthmed.new_tag", "tags.`synthmed.sweep_id` = "]


def test_no_module_inside_the_package_imports_its_face():
    """``synthmed/__init__.py`` is for users; inside, modules import the module that defines a name."""
    graph = grimp.build_graph("synthmed")
    importers = graph.find_modules_that_directly_import("synthmed") - {"synthmed"}
    assert not importers, f"these import synthmed/__init__.py: {sorted(importers)}"
    assert graph.find_modules_that_directly_import("synthmed.tracking.names")  # not vacuous: the graph has edges


def test_help_loads_none_of_the_heavy_libraries_and_stays_fast():
    code = ("import sys, runpy; sys.argv = ['synthmed', '--help']\n"
            "try:\n    runpy.run_module('synthmed.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print(','.join(m for m in {sorted(LAZY)!r} if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage" in out.stdout, out.stderr
    loaded = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    assert loaded == "", f"`synthmed --help` imported {loaded}: keep them lazy ({LAZY})"
    # CPU seconds of the child (user + system), the least of three: wall time would measure the machine's load
    cpu = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "synthmed.cli", "--help"], capture_output=True, check=True, timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    assert min(cpu) < 0.5, f"synthmed --help took {min(cpu):.2f} CPU seconds"


@pytest.mark.parametrize("name", sorted(LAZY))
def test_each_lazy_library_is_one_synthmed_uses(name):
    """The list above names real dependencies (a stale entry would hide nothing)."""
    uses = [p for p in SRC.rglob("*.py") if re.search(rf"^\s*(import {name}\b|from {name}[ .])", p.read_text(), re.M)]
    assert uses, f"nothing in synthmed imports {name}: drop it from LAZY"
