"""synthmed-openai: the ``openai`` generator for synthmed (a separately installed plugin).

Installed, it is found through the ``synthmed`` entry-point group like any third-party plugin
(``synthmed plugins`` lists it as coming from this distribution). Importing it is cheap: the
``openai`` SDK loads on the first request.
"""

from __future__ import annotations

from synthmed import hookimpl

from synthmed_openai.generator import OpenAIGenerator

__all__ = ["OpenAIGenerator", "register_generators"]
__version__ = "0.1.0"


@hookimpl
def register_generators() -> list[type]:
    """The ``openai`` generator."""
    return [OpenAIGenerator]
