"""The frame every table starts from, and how its cells and pairs are named.

``results`` has one row per finished simulation: the keys :data:`CELL` (``model, policy,
real_frac``), ``simulation`` (the pairing index: simulation ``i`` of every cell shares its real
sample), optionally ``run_id``, and one column per metric. The metric names are the caller's: the
statistics never assume which metrics exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CELL", "cell_prefix", "frac_label", "pair_name", "same_runs"]

CELL = ["model", "policy", "real_frac"]  # the keys of a cell


def frac_label(frac: float) -> str:
    """``0.3`` → ``'0.3'``: how a real fraction is written in labels (``1.0`` → ``'1'``)."""
    return f"{float(frac):g}"


def cell_prefix(model: str, policy: str, frac: float) -> str:
    """The label of a cell: ``cnn.synthetic.0.3``."""
    return f"{model}.{policy}.{frac_label(frac)}"


def pair_name(model: str, policy: str, frac: float, base_policy: str, base_frac: float) -> str:
    """The label of a pair: ``cnn.synthetic_vs_none.0.3`` or ``cnn.none.0.3_vs_1``."""
    if policy != base_policy:
        return f"{model}.{policy}_vs_{base_policy}.{frac_label(frac)}"
    return f"{model}.{policy}.{frac_label(frac)}_vs_{frac_label(base_frac)}"


def same_runs(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Two cells made of the very same runs (a cell shared with another: identical by construction)."""
    return "run_id" in a and "run_id" in b and set(a["run_id"]) == set(b["run_id"])
