"""The one way to get a run's generator: look it up, check the opt-in, build it, bind it, fit it.

A run has one generator, made by :func:`fitted_generator`: built from ``generator_options``,
bound to the dataset's class names and — when it learns — fitted on exactly the run's real
sample. Training builds it once and hands that object to the policy (``PolicyContext.generator``)
and the Grad-CAM panel; ``synthmed gradcam``, ``synthmed generate`` and ``synthmed
inspect-generator`` get theirs from the same function, so each rebuilds the same fit (from the
fit cache) and keys the generation cache the same way. :func:`check_generator` checks what can
be checked before data loading without building anything, and every path refuses a generator
that sends scans off this machine with one message.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Sequence

from synthmed.data.loading import sample_real
from synthmed.errors import SynthmedError
from synthmed.generators.fitting import ensure_fitted, fit_cache_for, fit_fingerprint, fit_key
from synthmed.options import accepted_options
from synthmed.plugins import registry

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits
    from synthmed.generators.base import Generator

__all__ = ["build_generator", "check_external", "check_generator", "fitted_generator", "generator_class"]


def generator_class(config: Config, pm: pluggy.PluginManager | None = None, *, external_ok: bool = False) -> type[Generator]:
    """``config.generator``'s class, refusing an off-machine one without ``allow_external``.

    Args:
        config: the run's config.
        pm: plugin manager (default: the process-wide one).
        external_ok: skip the opt-in check (only for estimates that send nothing).
    """
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


def check_generator(config: Config, pm: pluggy.PluginManager | None = None, *,
                    external_ok: bool = False) -> type[Generator]:
    """Check ``config``'s generator before data loading, without building it; returns its class.

    Refuses an unknown name, an off-machine generator without ``allow_external`` and
    ``generator_options`` its ``__init__`` does not take (or lacks a required one), with the
    messages :func:`synthmed.options.construct` gives. The values are the generator's to
    coerce: they are checked when the run builds its one instance.
    """
    cls = generator_class(config, pm, external_ok=external_ok)
    options = config.generator_params()
    accepted, takes_any = accepted_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise SynthmedError(f"generator {cls.name!r} does not take option(s) {', '.join(map(repr, unknown))} — "
                            f"accepted: {', '.join(accepted) or 'none'}")
    params = inspect.signature(cls.__init__).parameters
    missing = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in options]
    if missing:
        raise SynthmedError(f"generator {cls.name!r} needs option(s) {', '.join(missing)} — pass them as "
                            f"--generator-options '{missing[0]}=...' (or -P generator_options=...)")
    return cls


def build_generator(config: Config, pm: pluggy.PluginManager | None = None, classes: Sequence[str] = (), *,
                    external_ok: bool = False) -> Generator:
    """The configured generator, built from ``generator_options`` and bound to the class names (not fitted).

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


def fitted_generator(
    config: Config,
    pm: pluggy.PluginManager | None,
    splits: Splits,
    real: ImageSet | None = None,
    *,
    built: Generator | None = None,
    estimate: bool = False,
    log_metrics: Callable[..., None] = lambda metrics, step=None: None,
    log_params: Callable[[dict[str, Any]], None] = lambda params: None,
) -> Generator:
    """The run's generator, ready to generate: built, bound to ``splits.classes`` and, when it learns, fitted.

    A learning generator is fitted on exactly the run's real sample (after the validation
    carve) — or loads that fit from the run's fit cache — so every caller with the same
    config holds the same fit and keys the generation cache the same way.

    Args:
        config: the run's config.
        pm: plugin manager (``None``: the process-wide one).
        splits: the loaded dataset.
        real: the run's real sample, when the caller has drawn it already; drawn from ``splits``
            with :func:`~synthmed.data.loading.sample_real` otherwise.
        built: the instance :func:`build_generator` made for this config already (training builds
            it before data loading, so a bad option value fails early); bound and fitted here.
        estimate: fit nothing and send nothing: only work out the fit key a run would use (so
            cache keys can be counted), and skip the ``allow_external`` opt-in.
        log_metrics: ``log_metrics(metrics, step=...)`` of the run that records the fit.
        log_params: ``log_params(params)`` of the run that records the fit.
    """
    generator = built if built is not None else build_generator(config, pm, external_ok=estimate)
    generator.bind(tuple(splits.classes))
    if not generator.learns:
        return generator
    if real is None:
        real, _ = sample_real(splits, config)
    if estimate:
        generator.fit_key = fit_key(generator, fit_fingerprint(real.images, real.labels))
    else:
        ensure_fitted(generator, real.images, real.labels, fit_cache_for(config), seed=config.seed,
                      quiet=config.quiet, log_metrics=log_metrics, log_params=log_params,
                      checkpoint_every=config.checkpoint_every)
    return generator
