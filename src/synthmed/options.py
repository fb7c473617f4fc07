"""Plugin options: ``key=value`` strings from the config turned into a plugin's constructor call.

``generator_options`` and ``policy_options`` follow one rule, so a plugin author learns it once:
the plugin's ``__init__`` keyword arguments are its options; an unknown option is refused naming
the accepted ones; a required one that is missing is named with how to pass it; values arrive as
strings and the plugin coerces them (:func:`synthmed.generators.base.coerce_option`).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence, TypeVar

from synthmed.config import parse_bool
from synthmed.errors import SynthmedError

T = TypeVar("T")

__all__ = ["accepted_options", "coerce_value", "construct"]


def accepted_options(cls: type) -> tuple[list[str], bool]:
    """The keyword options ``cls.__init__`` takes, and whether it takes any (``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [n for n, p in params.items() if n != "self" and p.kind in named], takes_any


def construct(cls: type[T], options: Mapping[str, Any], *, kind: str, field: str, fixed: Mapping[str, Any] | None = None) -> T:
    """``cls(**fixed, **options)``, refusing unknown options and naming missing ones.

    Args:
        cls: the plugin class (its ``name`` appears in messages).
        options: the parsed ``key=value`` options (strings).
        kind: ``generator`` or ``policy`` (for messages).
        field: the config field the options come from (``generator_options``...).
        fixed: arguments synthmed itself passes (e.g. the run's config); not options.
    """
    fixed = dict(fixed or {})
    accepted, takes_any = accepted_options(cls)
    offered = [n for n in accepted if n not in fixed]
    unknown = sorted(set(options) - set(offered))
    if unknown and not takes_any:
        raise SynthmedError(
            f"{kind} {getattr(cls, 'name', cls.__name__)!r} does not take option(s) {', '.join(map(repr, unknown))} — "
            f"accepted: {', '.join(offered) or 'none'}"
        )
    params = inspect.signature(cls.__init__).parameters
    missing = [n for n in offered if params[n].default is inspect.Parameter.empty and n not in options]
    if missing:
        flag = "--" + field.replace("_", "-")
        raise SynthmedError(
            f"{kind} {getattr(cls, 'name', cls.__name__)!r} needs option(s) {', '.join(missing)} — pass them as "
            f"{flag} '{missing[0]}=...' (or -P {field}=...)"
        )
    try:
        return cls(**fixed, **options)
    except PermissionError as exc:  # an option names a file this user may not read (ddpm's init=PATH...)
        flag = "--" + field.replace("_", "-")
        raise SynthmedError(
            f"{kind} {getattr(cls, 'name', cls.__name__)!r}: {exc.filename or 'a file its options name'} cannot be "
            f"read ({exc.strerror}) — give this user read access to it, or name another in {flag}"
        ) from exc


def coerce_value(
    owner: str,
    key: str,
    value: Any,
    kind: type,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    """Turn one (usually string) plugin option into ``kind``, or raise a helpful error.

    Args:
        owner: what the option belongs to, for the message (``"policy 'basic'"``).
        key: the option's name.
        value: the raw value (``'0.5'``, ``0.5``, ``'true'``, ...).
        kind: ``int``, ``float``, ``bool`` or ``str``.
        low: inclusive lower bound for numbers.
        high: inclusive upper bound for numbers.
        choices: allowed values for strings.
    """
    text = str(value).strip()
    try:
        if kind is bool:
            out: Any = parse_bool(value)
        elif kind is int:
            out = int(value) if isinstance(value, int) else int(text)
        elif kind is float:
            out = float(value) if isinstance(value, (int, float)) else float(text)
            if out != out or out in (float("inf"), float("-inf")):
                raise ValueError
        else:
            out = text
    except ValueError:
        raise SynthmedError(
            f"{owner}: option {key}={value!r} is not a valid {kind.__name__}"
        ) from None
    if kind in (int, float) and ((low is not None and out < low) or (high is not None and out > high)):
        bounds = " and ".join(p for p in (f">= {low}" if low is not None else "",
                                          f"<= {high}" if high is not None else "") if p)
        raise SynthmedError(f"{owner}: option {key}={value!r} is out of range — allowed: {bounds}")
    if choices is not None and out not in choices:
        raise SynthmedError(
            f"{owner}: option {key}={value!r} is not allowed — choose one of {', '.join(choices)}"
        )
    return out
