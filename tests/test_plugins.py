"""The plugin manager and registries: built-ins as plugins, lookups, duplicates, misspelled hooks."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy
import pytest

import synthmed
from synthmed import hookspecs
from synthmed.errors import SynthmedError
from synthmed.plugins import DEFAULT_PLUGINS, KINDS, Registry, get_plugin_manager, registry
from synthmed.policies.base import AugmentationPolicy

DOCS = Path(__file__).resolve().parents[1] / "docs"


class _Twin(AugmentationPolicy):
    name = "none"  # clashes with the built-in

    def augment(self, images, rng):
        return images


class _TwinPlugin:
    @synthmed.hookimpl
    def register_policies(self):
        return [_Twin]


@pytest.fixture
def twin_plugin(pm):
    pm.register(_TwinPlugin(), name="twin-plugin")
    yield pm
    pm.unregister(name="twin-plugin")


@pytest.mark.parametrize("kind", list(KINDS))
def test_builtins_registered_through_hooks(pm, kind):
    reg = registry(kind, pm)
    builtin = [e for e in reg.entries() if e.cls.__module__ in DEFAULT_PLUGINS]
    assert builtin, f"no built-in {kind}"
    for entry in builtin:
        assert entry.provider == f"synthmed {synthmed.__version__}"


def test_third_party_plugin_comes_from_its_distribution(pm):
    pytest.importorskip("synthmed_openai")
    assert registry("generators", pm).provider("openai").startswith("synthmed-openai ")


def test_expected_builtins(pm):
    assert {"alzheimer_mri", "imagefolder"} <= set(registry("datasets", pm).names())
    assert {"cnn", "resnet18", "vit"} <= set(registry("models", pm).names())
    assert {"none", "basic", "autoaugment", "randaugment", "trivialaugment", "synthetic"} <= set(
        registry("policies", pm).names())
    assert {"elastic", "folder"} <= set(registry("generators", pm).names())


def test_unknown_name_lists_installed(pm):
    with pytest.raises(SynthmedError) as exc:
        registry("models", pm).get("resnet")
    assert "unknown model 'resnet'" in str(exc.value)
    assert "cnn" in str(exc.value) and "resnet18" in str(exc.value)


def test_duplicate_name_names_both_providers(twin_plugin):
    with pytest.raises(SynthmedError) as exc:
        Registry.collect(twin_plugin, "policies")
    msg = str(exc.value)
    assert "duplicate policy name 'none'" in msg and "twin-plugin" in msg and "synthmed" in msg


def test_misspelled_hook_fails_loudly(monkeypatch):
    class Typo:
        @synthmed.hookimpl
        def register_model(self):  # missing 's'
            return []

    pm = get_plugin_manager(autoload=False)
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_autoload_can_be_disabled(monkeypatch):
    calls = []
    monkeypatch.setattr(pluggy.PluginManager, "load_setuptools_entrypoints",
                        lambda self, group, name=None: calls.append(group) or 0)
    monkeypatch.setenv("SYNTHMED_DISABLE_PLUGIN_AUTOLOAD", "1")
    get_plugin_manager()
    assert calls == []
    monkeypatch.setenv("SYNTHMED_DISABLE_PLUGIN_AUTOLOAD", "0")
    get_plugin_manager()
    assert calls == ["synthmed"]


def test_unknown_kind():
    with pytest.raises(SynthmedError, match="unknown plugin kind"):
        registry("widgets")


def test_class_without_name_is_rejected(pm):
    class Nameless(AugmentationPolicy):
        def augment(self, images, rng):
            return images

    class P:
        @synthmed.hookimpl
        def register_policies(self):
            return [Nameless]

    pm.register(P(), name="nameless")
    with pytest.raises(SynthmedError, match="no string 'name'"):
        registry("policies", pm)


def test_default_plugins_are_importable_modules():
    import importlib

    for name in DEFAULT_PLUGINS:
        assert importlib.import_module(name)


def test_import_synthmed_is_cheap():
    import subprocess
    import sys

    code = "import sys, synthmed; print(','.join(m for m in ('torch','mlflow','openai','timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- meta-tests: every hook has a test and a docs section ------------------------------------------
HOOKS = [name for name in dir(hookspecs) if name.startswith("register_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    text = (DOCS / "plugins.md").read_text()
    assert re.search(rf"^##+ `?{hook}", text, re.M), f"docs/plugins.md has no section for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    kind = hook.removeprefix("register_")
    tests = Path(__file__).parent
    uses = [p for p in tests.glob("test_*.py") if re.search(rf'registry\("{kind}"', p.read_text())]
    assert len(uses) >= 2, f"hook {hook}: no contract test besides test_plugins.py uses registry('{kind}')"


def test_public_api_is_stable_whatever_was_imported_first():
    import subprocess
    import sys

    code = (
        "import synthmed\n"
        "a = (synthmed.sweep, synthmed.train, synthmed.gradcam.gradcam, synthmed.SweepSpec)\n"
        "import synthmed.sweep.spec, synthmed.training, synthmed.gradcam\n"
        "b = (synthmed.sweep, synthmed.train, synthmed.gradcam.gradcam, synthmed.SweepSpec)\n"
        "assert a == b and all(callable(f) for f in a), (a, b)\n"
        "assert all(hasattr(synthmed, n) for n in synthmed.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
