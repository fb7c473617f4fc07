"""Every extension point of synthmed, in one place.

A plugin is a module (or object) with functions marked ``@synthmed.hookimpl`` whose names match
the specs below. Built-in datasets, policies, models and generators are registered through these
same hooks (see ``synthmed.plugins.DEFAULT_PLUGINS``); third-party ones are found through the
``synthmed`` entry-point group.

Each ``register_*`` hook returns a list of classes. A class must carry a unique ``name`` attribute
and subclass the matching base class: :class:`synthmed.data.Dataset`,
:class:`synthmed.policies.AugmentationPolicy`, :class:`synthmed.models.ModelFactory` or
:class:`synthmed.generators.Generator`.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("synthmed")
hookimpl = pluggy.HookimplMarker("synthmed")


@hookspec
def register_datasets() -> list[type[Any]]:
    """Return dataset classes (subclasses of ``synthmed.data.Dataset``)."""


@hookspec
def register_policies() -> list[type[Any]]:
    """Return augmentation-policy classes (subclasses of ``synthmed.policies.AugmentationPolicy``)."""


@hookspec
def register_models() -> list[type[Any]]:
    """Return model-factory classes (subclasses of ``synthmed.models.ModelFactory``)."""


@hookspec
def register_generators() -> list[type[Any]]:
    """Return synthetic-image generator classes (subclasses of ``synthmed.generators.Generator``)."""
