"""Conformance checks for plugin authors: synthmed's contract for each kind of plugin, as functions.

A third-party package runs them on its classes in its own test suite, against the installed
synthmed — as scikit-learn's ``check_estimator`` does for estimators::

    from synthmed.testing import check_generator
    check_generator(MirrorJitter, shift=3)   # raises ContractError naming the broken rule

or, for one pytest case per rule::

    @pytest.mark.parametrize("case", contract_cases(MirrorJitter))
    def test_contract(case):
        case()

synthmed's own contract tests call the same functions for every registered class. Nothing in
synthmed imports this package (import-linter checks it): it is for tests and plugins.
"""

from synthmed.testing._contract import CLASSES, ContractError, ContractReport
from synthmed.testing.cases import ContractCase, contract_cases
from synthmed.testing.generators import GENERATOR_RULES, check_generator
from synthmed.testing.models import MODEL_RULES, check_model_factory
from synthmed.testing.policies import POLICY_RULES, check_policy

__all__ = [
    "CLASSES",
    "GENERATOR_RULES",
    "MODEL_RULES",
    "POLICY_RULES",
    "ContractCase",
    "ContractError",
    "ContractReport",
    "check_generator",
    "check_model_factory",
    "check_policy",
    "contract_cases",
]
