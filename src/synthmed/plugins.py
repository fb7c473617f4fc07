"""The plugin manager and the per-kind registries (datasets, policies, models, generators).

Built-ins are ordinary plugins: the modules named in :data:`DEFAULT_PLUGINS` are registered
exactly as a third-party distribution's entry point would be. Set ``SYNTHMED_DISABLE_PLUGIN_AUTOLOAD=1``
to skip the ``synthmed`` entry-point group (tests, debugging a broken plugin).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

from synthmed import hookspecs
from synthmed._version import __version__
from synthmed.errors import SynthmedError

ENTRY_POINT_GROUP = "synthmed"
AUTOLOAD_ENV = "SYNTHMED_DISABLE_PLUGIN_AUTOLOAD"

# Built-in plugins, registered like any other. Order does not matter: names must be unique.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "synthmed.data.alzheimer_mri",
    "synthmed.data.imagefolder",
    "synthmed.models.cnn",
    "synthmed.models.timm_models",
    "synthmed.policies.classic",
    "synthmed.policies.mri",
    "synthmed.policies.synthetic",
    "synthmed.policies.oversample",
    "synthmed.generators.elastic",
    "synthmed.generators.folder",
    "synthmed.generators.pca",
    "synthmed.generators.ddpm",
    "synthmed.generators.ldm",
)

KINDS: dict[str, str] = {
    "datasets": "register_datasets",
    "policies": "register_policies",
    "models": "register_models",
    "generators": "register_generators",
}

SINGULAR: dict[str, str] = {"datasets": "dataset", "policies": "policy", "models": "model", "generators": "generator"}

T = TypeVar("T")


def get_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """Build a fresh plugin manager: hookspecs, built-ins, then installed entry points.

    Args:
        autoload: load the ``synthmed`` entry-point group. ``None`` means "unless
            ``SYNTHMED_DISABLE_PLUGIN_AUTOLOAD`` is set".
    """
    pm = pluggy.PluginManager("synthmed")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_ENV, "").lower() in ("", "0", "false", "no")
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered class and who provides it."""

    name: str
    cls: type[T]
    provider: str  # distribution name ("synthmed", "synthmed-openai", ...) or plugin name


def _provider_of(pm: pluggy.PluginManager, plugin: object) -> str:
    for plug, dist in pm.list_plugin_distinfo():
        if plug is plugin:
            return f"{dist.project_name} {dist.version}"
    name = pm.get_name(plugin) or repr(plugin)
    if name.startswith("synthmed."):
        return f"synthmed {__version__}"
    return name


class Registry(Generic[T]):
    """All classes of one kind, looked up by name (like timm's ``create_model``/``list_models``)."""

    def __init__(self, kind: str, entries: dict[str, Entry[T]]):
        self.kind = kind
        self._entries = entries

    @classmethod
    def collect(cls, pm: pluggy.PluginManager, kind: str) -> Registry[Any]:
        if kind not in KINDS:
            raise SynthmedError(f"unknown plugin kind {kind!r} — one of {', '.join(KINDS)}")
        caller = getattr(pm.hook, KINDS[kind])
        entries: dict[str, Entry[Any]] = {}
        for impl in reversed(caller.get_hookimpls()):  # registration order
            provider = _provider_of(pm, impl.plugin)
            for klass in impl.function() or []:
                name = getattr(klass, "name", None)
                if not isinstance(name, str) or not name:
                    raise SynthmedError(
                        f"{SINGULAR[kind]} class {klass!r} from {provider} has no string 'name' attribute"
                    )
                if name in entries:
                    raise SynthmedError(
                        f"duplicate {SINGULAR[kind]} name {name!r}: provided by both "
                        f"{entries[name].provider} and {provider} — uninstall one of them"
                    )
                entries[name] = Entry(name, klass, provider)
        return cls(kind, entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> type[T]:
        """Return the class registered as ``name``; unknown names list the installed ones."""
        try:
            return self._entries[name].cls
        except KeyError:
            installed = ", ".join(self.names()) or "none"
            raise SynthmedError(
                f"unknown {SINGULAR[self.kind]} {name!r} — installed: {installed} "
                f"(third-party ones come from packages with a 'synthmed' entry point)"
            ) from None

    def provider(self, name: str) -> str:
        self.get(name)
        return self._entries[name].provider


_default_pm: pluggy.PluginManager | None = None


def default_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _default_pm
    if _default_pm is None:
        _default_pm = get_plugin_manager()
    return _default_pm


def registry(kind: str, pm: pluggy.PluginManager | None = None) -> Registry[Any]:
    """The registry of ``kind`` (``datasets``, ``policies``, ``models`` or ``generators``)."""
    return Registry.collect(pm or default_plugin_manager(), kind)
