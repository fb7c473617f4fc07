"""Statistics of repeated simulations (thesis Chapter 7): pure functions over arrays and frames.

Nothing here trains, logs or knows a tracking name: callers pass the metric names in, and a
report can be rebuilt from MLflow data alone (:mod:`synthmed.sweep.report` reads the runs,
calls :func:`build_tables` and logs what it returns). Where scipy or statsmodels computes the
same thing, a test holds the two equal.

Where each kind of statistic lives — a new statistic goes in the module of its kind:

* :mod:`.effects` — effect sizes and estimates of paired differences: Hodges–Lehmann,
  rank-biserial correlation, Cohen's d_z;
* :mod:`.paired` — hypothesis tests of paired differences: the Wilcoxon signed-rank p-value and
  its exact null distribution;
* :mod:`.intervals` — confidence intervals: percentile bootstrap, Hodges–Lehmann interval;
* :mod:`.multiplicity` — corrections for many comparisons: Holm;
* :mod:`.equivalence` — the real-scan equivalent (isotonic curve of the baseline, inverted);
* :mod:`.summaries` — one cell's summary and one pair's comparison, combining the above: a new
  column of the tables is added here;
* :mod:`.cells` and :mod:`.tables` — the results frame, the labels of cells and pairs, and the
  tables the report renders and the parent run's metrics are read from.
"""

from __future__ import annotations

from synthmed.stats.cells import CELL, cell_prefix, frac_label, pair_name, same_runs
from synthmed.stats.effects import cohen_dz, hodges_lehmann, rank_biserial, walsh_averages
from synthmed.stats.equivalence import (
    COLUMNS as EQUIVALENCE_COLUMNS,
    describe,
    invert_curve,
    isotonic_decreasing,
    real_scan_equivalent,
    real_scan_equivalents,
)
from synthmed.stats.intervals import N_BOOT, bootstrap_ci, hodges_lehmann_ci
from synthmed.stats.multiplicity import holm
from synthmed.stats.paired import exact_signed_rank_p, signed_rank_cdf, signed_rank_critical, wilcoxon_p
from synthmed.stats.summaries import paired_difference, summarize
from synthmed.stats.tables import Tables, build_tables, pairs_table, summary_table

__all__ = [
    "CELL",
    "EQUIVALENCE_COLUMNS",
    "N_BOOT",
    "Tables",
    "bootstrap_ci",
    "build_tables",
    "cell_prefix",
    "cohen_dz",
    "describe",
    "exact_signed_rank_p",
    "frac_label",
    "hodges_lehmann",
    "hodges_lehmann_ci",
    "holm",
    "invert_curve",
    "isotonic_decreasing",
    "pair_name",
    "paired_difference",
    "pairs_table",
    "rank_biserial",
    "real_scan_equivalent",
    "real_scan_equivalents",
    "same_runs",
    "signed_rank_cdf",
    "signed_rank_critical",
    "summarize",
    "summary_table",
    "walsh_averages",
    "wilcoxon_p",
]
