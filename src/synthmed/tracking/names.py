"""Every MLflow tag and headline metric name synthmed writes or searches for, defined once.

Runs are found again by these names (a resumed sweep finds its children by tag; the report reads
the headline metric), so a typo in one place would silently lose runs. Import the constant: this
is the only module that spells a ``synthmed.*`` tag (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

# --- tags of every run ------------------------------------------------------------------------------
TAG_VERSION = "synthmed.version"
TAG_DATASET = "synthmed.dataset"
TAG_FINGERPRINT = "synthmed.dataset_fingerprint"
TAG_MODEL = "synthmed.model"
TAG_POLICY = "synthmed.policy"
TAG_REAL_FRAC = "synthmed.real_frac"
TAG_SPLIT = "synthmed.split"  # given | grouped: which train/test split the run measured on
TAG_GIT_COMMIT = "synthmed.git_commit"
TAG_ERROR = "synthmed.error"  # why a run failed (also on interrupted sweep children)
TAG_OPEN_SET = "synthmed.open_set"  # a learned generator was warm-started from data outside the sample
TAG_KIND = "synthmed.kind"  # what opened a run that trains nothing (``inspect-generator``)

# --- who owns a run (ghost-run reaping, :mod:`synthmed.tracking.ghosts`) ------------------------------
TAG_HOST = "synthmed.host"
TAG_PID = "synthmed.pid"
TAG_PID_START = "synthmed.pid_start"  # the process's start time, so a reused pid is told apart
TAG_STARTED = "synthmed.started"
TAG_FAILURE_REASON = "synthmed.failure_reason"  # why a run was marked KILLED by another process

# --- how a run was trained ------------------------------------------------------------------------------
TAG_STACKED = "synthmed.batched"  # "k" on runs trained k at once (their models stacked)
TAG_STACK_FALLBACK = "synthmed.batched_fallback"  # why a run that was to be stacked trained alone
TAG_RESUMED = "synthmed.resumed_at_step"  # a run reopened by a rerun: the optimizer step its checkpoint held
TAG_RESUMED_FROM = "synthmed.resumed_from"  # a run that continued another run's checkpoint (under `mlflow run`)

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
#: what a run logs beside its own scores (synthmed.lookup): a lookup with no learning, and the class prior
LOOKUP_CE = "lookup_test_cross_entropy"
LOOKUP_ACCURACY = "lookup_test_accuracy"
PRIOR_CE = "prior_test_cross_entropy"
#: collected with a sweep's results and drawn as reference lines, never compared between policies (every
#: policy of a real fraction and simulation shares the sample, hence the lookup)
REFERENCE_METRICS = (LOOKUP_CE, LOOKUP_ACCURACY, PRIOR_CE)
#: ``protocol=thesis``: the readings of the thesis's "median validation loss" (docs/results.md), each under
#: its own name. The per-epoch series are HELDOUT_LOSS, REST_LOSS and (with a Keras-style carve) ``val_loss``;
#: a run's final metrics are those names with ``_last``, ``_min`` and ``_min_epoch``.
HELDOUT_LOSS = "thesis_heldout_loss"  # the held-out (test) split's loss, every epoch: its minimum selects on test
REST_LOSS = "thesis_rest_loss"  # the training split's images the sample left out (same subjects as the sample)
KERAS_VAL_LOSS = "thesis_keras_val_loss"  # the last val_frac of the sample, as Keras's validation_split takes it
THESIS_READINGS = (f"{HELDOUT_LOSS}_last", f"{HELDOUT_LOSS}_min", f"{REST_LOSS}_last", f"{KERAS_VAL_LOSS}_last")
#: collected with a sweep's results and summarised in its report beside the headline: the thesis's readings,
#: the epoch of the held-out minimum, and (protocol=sound) the validation loss at the kept epoch
READING_METRICS = (*THESIS_READINGS, f"{HELDOUT_LOSS}_min_epoch", "val_loss_min")
TRAIN_SUMMARY = (HEADLINE, "test_accuracy", "test_balanced_accuracy", "test_macro_f1")
