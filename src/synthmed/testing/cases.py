"""``contract_cases``: one pytest case per rule, for a plugin author's own test suite.

pytest is imported only when these are called: synthmed itself runs without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from synthmed.generators.base import Generator
from synthmed.models.base import ModelFactory
from synthmed.policies.base import AugmentationPolicy
from synthmed.testing._contract import ContractReport, plugin_name
from synthmed.testing.generators import GENERATOR_RULES, check_generator
from synthmed.testing.models import MODEL_RULES, check_model_factory
from synthmed.testing.policies import POLICY_RULES, check_policy

__all__ = ["ContractCase", "contract_cases"]

_CHECKS: tuple[tuple[type, Callable[..., ContractReport], Mapping[str, Any]], ...] = (
    (Generator, check_generator, GENERATOR_RULES),
    (AugmentationPolicy, check_policy, POLICY_RULES),
    (ModelFactory, check_model_factory, MODEL_RULES),
)


@dataclass(frozen=True)
class ContractCase:
    """One rule of one plugin class's contract; calling it checks that rule.

    Attributes:
        cls: the plugin class.
        rule: the rule's name.
        options: what the check passes on (plugin options, ``allow_external``).
    """

    cls: type
    rule: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self) -> ContractReport:
        """Check the rule; a rule that was not checked (it does not apply, or needs a service) is a pytest skip.

        Raises:
            ContractError: the rule is broken.
        """
        __tracebackhide__ = True
        report = _check_for(self.cls)[0](self.cls, rules=[self.rule], **self.options)
        if self.rule in report.not_checked:
            import pytest  # only inside a test suite

            pytest.skip(f"{report.kind} {report.name!r}: rule {self.rule!r} not checked — {report.not_checked[self.rule]}")
        return report


def _check_for(cls: object) -> tuple[Callable[..., ContractReport], Mapping[str, Any]]:
    for base, check, rules in _CHECKS:
        if isinstance(cls, type) and issubclass(cls, base):
            return check, rules
    raise TypeError(f"no contract for {cls!r}: pass a Generator, AugmentationPolicy or ModelFactory subclass")


def contract_cases(cls: type, /, **options: Any) -> list[Any]:
    """One ``pytest.param`` per rule of ``cls``'s contract, for ``@pytest.mark.parametrize``.

    The kind of contract follows from the class (a generator, a policy or a model factory)::

        @pytest.mark.parametrize("case", contract_cases(MirrorJitter, shift=3))
        def test_contract(case):
            case()

    Each case's id is ``<name>-<rule>``; a broken rule fails its case with a
    :class:`~synthmed.testing.ContractError`, and a rule that was not checked is skipped, saying why.

    Args:
        cls: the plugin class.
        **options: passed to its check (:func:`check_generator`, :func:`check_policy` or
            :func:`check_model_factory`), e.g. the plugin's options or ``allow_external=True``.
    """
    import pytest  # only inside a test suite: synthmed's runtime does not need pytest

    _, rules = _check_for(cls)
    name = plugin_name(cls)
    return [pytest.param(ContractCase(cls, rule, dict(options)), id=f"{name}-{rule}") for rule in rules]
