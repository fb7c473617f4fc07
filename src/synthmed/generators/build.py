"""The one way to get a run's generator: look it up, check the opt-in, build it from options, bind it.

Training, the synthetic policy, Grad-CAM panels and cache pre-filling all call
:func:`build_generator` (or :func:`generator_class` to check before data loading), so a
generator that sends scans off this machine is refused with one message everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from synthmed.errors import SynthmedError

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config
    from synthmed.generators.base import Generator

__all__ = ["build_generator", "check_external", "generator_class"]


def generator_class(config: Config, pm: pluggy.PluginManager | None = None, *, external_ok: bool = False) -> type[Generator]:
    """``config.generator``'s class, refusing an off-machine one without ``allow_external``.

    Args:
        config: the run's config.
        pm: plugin manager (default: the process-wide one).
        external_ok: skip the opt-in check (only for estimates that send nothing).
    """
    from synthmed.plugins import registry

    cls = registry("generators", pm).get(config.generator)
    if not external_ok:
        check_external(cls, config)
    return cls


def check_external(cls: type[Generator], config: Config) -> None:
    """Refuse a generator that sends the source images off this machine unless the run opted in."""
    if cls.sends_data_off_machine and not config.allow_external:
        raise SynthmedError(
            f"generator {cls.name!r} sends the source images (patient scans) to a third-party service; "
            "opt in explicitly with --allow-external (mlflow run: -P allow_external=true), "
            "or use a local generator such as generator=elastic"
        )


def build_generator(config: Config, pm: pluggy.PluginManager | None = None, classes: Sequence[str] = (), *,
                    external_ok: bool = False) -> Generator:
    """The configured generator, built from ``generator_options`` and bound to the class names.

    Args:
        config: the run's config (``generator``, ``generator_options``, ``allow_external``).
        pm: plugin manager (default: the process-wide one).
        classes: the dataset's class names (label ``i`` is ``classes[i]``); empty to bind later.
        external_ok: skip the opt-in check (only for estimates that send nothing).
    """
    generator = generator_class(config, pm, external_ok=external_ok).from_config(config)
    if classes:
        generator.bind(tuple(classes))
    return generator
