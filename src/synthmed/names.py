"""Every MLflow tag and headline metric name synthmed writes or searches for, defined once.

Runs are found again by these names (a resumed sweep finds its children by tag; the report reads
the headline metric), so a typo in one place would silently lose runs. Import the constant.
"""

from __future__ import annotations

# --- tags of every run ------------------------------------------------------------------------------
TAG_VERSION = "synthmed.version"
TAG_DATASET = "synthmed.dataset"
TAG_FINGERPRINT = "synthmed.dataset_fingerprint"
TAG_MODEL = "synthmed.model"
TAG_POLICY = "synthmed.policy"
TAG_REAL_FRAC = "synthmed.real_frac"
TAG_GIT_COMMIT = "synthmed.git_commit"
TAG_ERROR = "synthmed.error"  # why a run failed (also on interrupted sweep children)
TAG_OPEN_SET = "synthmed.open_set"  # a learned generator was warm-started from data outside the sample

# --- tags of sweeps -----------------------------------------------------------------------------------
TAG_SWEEP = "synthmed.sweep"  # "1" on a sweep's parent run
TAG_SWEEP_ID = "synthmed.sweep_id"
TAG_SIMULATIONS = "synthmed.simulations"
TAG_SHARED_CELLS = "synthmed.shared_cells"  # on a sweep's parent: JSON {cell: the cell whose runs it shares}
TAG_CELL = "synthmed.cell"  # model|policy|real_frac of a child run
TAG_SIMULATION = "synthmed.simulation"
TAG_RESUMED_SWEEP = "synthmed.resumed_sweep"
TAG_SWEEP_GRADCAM = "synthmed.gradcam"
TAG_GRADCAM_SKIPPED = "synthmed.gradcam_skipped"  # on a child run: why it logs no Grad-CAM panel
TAG_SWEEP_LOG_MODEL = "synthmed.log_model"
TAG_SPEC_ID = "synthmed.spec_id"  # the sweep's identity without device and precision
TAG_DEVICE = "synthmed.device"  # device kind a sweep's runs compute on (cpu, cuda)
TAG_PRECISION = "synthmed.precision"  # bf16 or fp32

# --- metrics --------------------------------------------------------------------------------------
HEADLINE = "test_cross_entropy"  # the thesis's measure (Chapter 7): what sweeps compare
#: the metrics a sweep summarises and compares, headline first
SWEEP_METRICS = (HEADLINE, "test_accuracy", "test_macro_f1")
#: what `synthmed train` prints
TRAIN_SUMMARY = (HEADLINE, "test_accuracy", "test_balanced_accuracy", "test_macro_f1")
