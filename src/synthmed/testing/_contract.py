"""What every check shares: named rules, the error that names the broken one, the report, tiny scans."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, TypeVar

import torch

S = TypeVar("S")
T = TypeVar("T")

#: The class names the checks bind generators to (label ``i`` is ``CLASSES[i]``): the default dataset's.
CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")


class ContractError(AssertionError):
    """A plugin class breaks a rule of its contract.

    An ``AssertionError``, so pytest shows it as a failed test. The message names the plugin and the
    rule: ``generator 'mygen' breaks rule 'batch-independent': ...``.

    Attributes:
        kind: ``generator``, ``policy`` or ``model``.
        name: the plugin's ``name``.
        rule: the rule broken (a key of ``GENERATOR_RULES``, ``POLICY_RULES`` or ``MODEL_RULES``).
        detail: what was seen.
    """

    __module__ = "synthmed.testing"  # where users import it from, and what tracebacks show

    def __init__(self, kind: str, name: str, rule: str, detail: str):
        self.kind, self.name, self.rule, self.detail = kind, name, rule, detail
        super().__init__(f"{kind} {name!r} breaks rule {rule!r}: {detail}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:  # pickles (multiprocessing test runners)
        return type(self), (self.kind, self.name, self.rule, self.detail)


@dataclass(frozen=True)
class ContractReport:
    """What a check did, when no rule was broken.

    Attributes:
        kind: ``generator``, ``policy`` or ``model``.
        name: the plugin's ``name``.
        checked: the rules checked and kept, in order.
        not_checked: rule → why it was not checked (it does not apply, or it needs a service
            off this machine). The pytest helper turns these into skips.
    """

    kind: str
    name: str
    checked: tuple[str, ...]
    not_checked: Mapping[str, str] = field(default_factory=dict)


class Broken(Exception):
    """Raised inside a rule: its runner turns it into a :class:`ContractError` naming the rule."""


class NotChecked(Exception):
    """Raised inside a rule that does not apply, or cannot be checked here; the message says why."""


def expect(condition: bool, detail: str) -> None:
    """Inside a rule: ``detail`` says what was seen when ``condition`` does not hold."""
    if not condition:
        raise Broken(detail)


#: A contract: rule name → the function checking it on a built plugin (the subject). A rule's
#: docstring's first line says what it checks; it raises :class:`Broken`, or :class:`NotChecked`.
Rules = Mapping[str, Callable[[S], None]]


def select(rules: Rules[S], wanted: Iterable[str] | None, kind: str) -> dict[str, Callable[[S], None]]:
    """The rules named in ``wanted`` (all when ``None``), refusing a name that is no rule."""
    if wanted is None:
        return dict(rules)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [w for w in wanted if w not in rules]
    if unknown:
        raise ValueError(f"no {kind} rule {', '.join(map(repr, unknown))} — the rules are: {', '.join(rules)}")
    return {name: check for name, check in rules.items() if name in wanted}


def run_rules(kind: str, name: str, rules: Rules[S], subject: S) -> ContractReport:
    """Check each rule on ``subject`` in order; the first broken one raises :class:`ContractError`."""
    __tracebackhide__ = True  # pytest shows the test's line and the message, not this machinery
    checked: list[str] = []
    not_checked: dict[str, str] = {}
    for rule, check in rules.items():
        try:
            call_as(kind, name, rule, check, subject)
        except NotChecked as why:
            not_checked[rule] = str(why)
        else:
            checked.append(rule)
    return ContractReport(kind, name, tuple(checked), not_checked)


def call_as(kind: str, name: str, rule: str, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``, where whatever goes wrong breaks ``rule`` of plugin ``name`` (chained, never swallowed)."""
    __tracebackhide__ = True
    try:
        return fn(*args)
    except (ContractError, NotChecked):
        raise
    except Broken as broken:
        raise ContractError(kind, name, rule, str(broken)) from None
    except Exception as exc:  # the plugin's own code failed inside the rule
        raise ContractError(kind, name, rule, f"raised {type(exc).__name__}: {exc}") from exc


def plugin_name(cls: type) -> str:
    """The plugin's ``name`` (its class name when it declares none)."""
    name = getattr(cls, "name", None)
    return name if isinstance(name, str) and name else cls.__name__


def scans(n: int, h: int = 32, w: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Brain-ish tiny scans and their labels: a textured bright disc on black.

    Returns:
        ``(n, 1, h, w)`` uint8 images and ``(n,)`` int64 labels ``0, 1, 2, 3, 0, ...``.
    """
    w = h if w is None else w
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.6).float()  # (h, w)
    texture = torch.rand(n, 1, h, w, generator=g) * 0.5 + 0.5  # (n, 1, h, w) in [0.5, 1)
    return (disc * texture * 255).to(torch.uint8), torch.arange(n) % len(CLASSES)


def rng(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)
