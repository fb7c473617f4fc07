"""synthmed-diffusers: the ``sd-variation`` generator for synthmed (a separately installed plugin).

Installed, it is found through the ``synthmed`` entry-point group like any third-party plugin
(``synthmed plugins`` lists it as coming from this distribution). Importing it is cheap:
``diffusers`` and ``transformers`` load when the pipeline is first needed.
"""

from __future__ import annotations

from synthmed import hookimpl

from synthmed_diffusers.generator import SDVariationGenerator

__all__ = ["SDVariationGenerator", "register_generators"]
__version__ = "0.1.0"


@hookimpl
def register_generators() -> list[type]:
    """The ``sd-variation`` generator."""
    return [SDVariationGenerator]
