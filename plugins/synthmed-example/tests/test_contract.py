"""synthmed's generator contract, run on this plugin's generator against the installed synthmed."""

import pytest

from synthmed.testing import check_generator, contract_cases
from synthmed_example import MirrorJitter


@pytest.mark.parametrize("case", contract_cases(MirrorJitter))  # one test per rule of the contract
def test_contract(case):
    case()


def test_contract_with_options_as_the_command_line_gives_them():
    report = check_generator(MirrorJitter, shift="0", gain="0.5")  # raises ContractError naming a broken rule
    assert "batch-independent" in report.checked
