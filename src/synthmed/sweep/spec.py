"""What a sweep runs (Chapter 7): the grid of cells, the seed of each simulation, the sweep's identity.

Simulation ``i`` gets the seed :func:`simulation_seed` ``(sweep seed, i)`` in *every* cell, so all
policies and models at one real fraction train on the same stratified real sample (a paired
design). The sweep's identity is a hash of its spec (:attr:`SweepSpec.sweep_id`). Plain data: no
torch, no MLflow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.stats.cells import frac_label  # re-exported: how a real fraction is written everywhere
from synthmed.tracking import names

__all__ = ["Cell", "SweepSpec", "Task", "frac_label", "simulation_seed"]

TAG_SWEEP, TAG_ID, TAG_SIMULATIONS = names.TAG_SWEEP, names.TAG_SWEEP_ID, names.TAG_SIMULATIONS
TAG_CELL, TAG_SIMULATION = names.TAG_CELL, names.TAG_SIMULATION
# Fields a sweep sets per child, or that do not change results (where data live, display), or that
# enter the identity resolved (device and precision: `device_kind`, `precision` below).
_NOT_IN_SPEC = ("model", "policy", "real_frac", "seed", "register", "gradcam", "log_model", "quiet",
                "experiment", "device", "precision", "data_dir", "cache_dir", "checkpoint_every", "checkpoint_dir")


#: policies that add nothing at real fraction 1.0 when ``synth_frac`` is unset (see SweepSpec.shared_cells)
SHARED_WITH_NONE = ("synthetic", "oversample")


def simulation_seed(sweep_seed: int, simulation: int) -> int:
    """The seed of simulation ``i``: a function of (sweep seed, i) only, in ``[0, 2**31)``."""
    digest = hashlib.sha256(f"synthmed.sweep/{sweep_seed}/{simulation}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


@dataclass(frozen=True)
class Cell:
    """One configuration of a sweep."""

    model: str
    policy: str
    real_frac: float

    @property
    def label(self) -> str:
        """``cnn|synthetic|0.3``: the ``synthmed.cell`` tag of its runs."""
        return f"{self.model}|{self.policy}|{frac_label(self.real_frac)}"


@dataclass(frozen=True)
class Task:
    """One simulation of one cell: the config to train and how its run is tagged."""

    cell: Cell
    simulation: int
    config: Config
    tags: dict[str, str]
    run_name: str


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs. ``simulations`` is not part of its identity: raise it to extend a sweep."""

    base: Config
    models: tuple[str, ...]
    policies: tuple[str, ...]
    real_fracs: tuple[float, ...]
    simulations: int
    seed: int = 0
    gradcam: bool = False
    log_model: bool = False
    #: where and at which precision the runs compute (``cpu``/``cuda``, ``bf16``/``fp32``), resolved
    #: on the machine that runs the sweep: part of the identity, since the same seed gives other
    #: numbers in bf16 than in fp32
    device_kind: str = ""
    precision: str = ""
    #: the generator fits on each run's sample (``ddpm``): a run's Grad-CAM panel would need that
    #: fit, which only the synthetic policy's runs at the same real fraction make anyway
    generator_learns: bool = False

    def __post_init__(self) -> None:
        for name in ("models", "policies", "real_fracs"):
            values = getattr(self, name)
            if not values:
                raise SynthmedError(f"sweep {name} is empty — give at least one value")
            if len(set(values)) != len(values):
                raise SynthmedError(f"sweep {name}={list(values)} lists a value twice")
        if self.simulations < 1 or self.seed < 0:
            raise SynthmedError(f"simulations={self.simulations} must be >= 1 and seed={self.seed} >= 0")
        for frac in self.real_fracs:
            self.base.replace(real_frac=frac)  # validates the range with Config's message

    def params(self) -> dict[str, str]:
        """The spec as MLflow params of the parent run (and the input of :attr:`sweep_id`)."""
        values = {k: v for k, v in self.base.to_dict().items() if k not in _NOT_IN_SPEC}
        out = {k: "None" if v is None else str(v) for k, v in values.items()}
        out.update(models=",".join(self.models), policies=",".join(self.policies),
                   real_fracs=",".join(frac_label(f) for f in self.real_fracs), sweep_seed=str(self.seed))
        return out

    @property
    def sweep_id(self) -> str:
        """The sweep's identity: the spec and where it computes (device kind and precision)."""
        runtime = {"device_kind": self.device_kind, "precision": self.precision} if self.device_kind else {}
        return hashlib.sha256(json.dumps({**self.params(), **runtime}, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def spec_id(self) -> str:
        """The identity without the runtime: the same experiment on any device (finds a sweep run elsewhere)."""
        return hashlib.sha256(json.dumps(self.params(), sort_keys=True).encode()).hexdigest()[:16]

    def cells(self) -> list[Cell]:
        return [Cell(m, p, f) for m in self.models for p in self.policies for f in self.real_fracs]

    def shared_cells(self) -> dict[Cell, Cell]:
        """Cells identical by construction to another cell of the grid, which is trained once for both.

        ``synthetic`` and ``oversample`` at real fraction 1.0 with ``synth_frac`` unset (or 0) add no
        image (the synthetic share defaults to ``1 - real_frac``), so with ``base_policy=none`` they
        train exactly what ``none`` at 1.0 trains: their runs are ``none@1.0``'s.
        """
        base = self.base
        if "none" not in self.policies or base.base_policy != "none" or base.synth_frac not in (None, 0.0):
            return {}
        return {Cell(m, p, f): Cell(m, "none", f) for m in self.models for p in self.policies
                for f in self.real_fracs if p in SHARED_WITH_NONE and f == 1.0}

    def trained_cells(self) -> list[Cell]:
        """The cells whose simulations run (:meth:`cells` less :meth:`shared_cells`)."""
        shared = self.shared_cells()
        return [c for c in self.cells() if c not in shared]

    def tasks(self) -> list[Task]:
        """Every (cell, simulation), simulation-major, so an interrupted sweep stays balanced."""
        sweep_id = self.sweep_id
        fitted = {c.real_frac for c in self.trained_cells() if c.policy == "synthetic"}
        out = []
        for i in range(self.simulations):
            for cell in self.trained_cells():
                # a learning generator's fit is the run's sample's: the synthetic runs at this fraction
                # make it (the sample is the same in every cell of a simulation); elsewhere the
                # panel alone would pay for a fit, minutes on a CPU
                panel = self.gradcam and (not self.generator_learns or cell.real_frac in fitted)
                config = self.base.replace(model=cell.model, policy=cell.policy, real_frac=cell.real_frac,
                                           seed=simulation_seed(self.seed, i), register="none",
                                           gradcam=panel, log_model=self.log_model, quiet=True)
                tags = {TAG_ID: sweep_id, TAG_CELL: cell.label, names.TAG_MODEL: cell.model,
                        names.TAG_POLICY: cell.policy, names.TAG_REAL_FRAC: frac_label(cell.real_frac),
                        TAG_SIMULATION: str(i)}
                if self.gradcam and not panel:
                    tags[names.TAG_GRADCAM_SKIPPED] = (
                        f"generator {self.base.generator!r} learns and no synthetic run of this sweep fits it at "
                        f"real fraction {frac_label(cell.real_frac)}: the panel alone would cost a fit of its own")
                name = f"{cell.model}-{cell.policy}-{frac_label(cell.real_frac)}-s{i:03d}"
                out.append(Task(cell, i, config, tags, name))
        return out
