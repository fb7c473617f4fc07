"""What a sweep's numbers rest on, read from its runs and written as one line at the top of its report.

Plain data over MLflow ``Run`` objects (no MLflow import): generator and its parameters, shared
or per-simulation generations, training budget, epochs, image size, the device and precision
actually used, dataset fingerprint, revision and train/test split, open-set flags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthmed.tracking import names

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = ["provenance", "provenance_line"]


def provenance(parent: Run, children: list[Run]) -> dict[str, str]:
    """The provenance of a sweep from its parent and its finished children (open-set: a learned
    generator warm-started from data outside the sample)."""
    params, tags = parent.data.params, parent.data.tags

    def seen(key: str, where: str = "params") -> str:
        values = sorted({getattr(r.data, where).get(key) for r in children} - {None})
        return ", ".join(values) if values else "n/a"

    synthetic = [r for r in children if "synthetic_generator_params" in r.data.params]
    open_set = sorted({r.data.tags.get(names.TAG_OPEN_SET, "") for r in children} - {"", "0", "false"})
    if any(r.data.params.get("generator_open_set") == "True" for r in children):
        open_set = sorted({*open_set, "a learned generator was warm-started from data outside the sample"})
    return {
        "generator": params.get("generator", "n/a") if synthetic else "none used",
        "generator_params": (", ".join(sorted({r.data.params["synthetic_generator_params"] for r in synthetic}))
                             if synthetic else "n/a"),
        "generations": ", ".join(sorted({r.data.params.get("synthetic_generations", "shared") for r in synthetic}))
        if synthetic else "n/a",
        "budget": params.get("budget", "epochs"),
        "epochs": params.get("epochs", "n/a"),
        "image_size": params.get("image_size", "n/a"),
        "device": seen("device_used") if any("device_used" in r.data.params for r in children)
        else tags.get(names.TAG_DEVICE, "n/a"),
        "precision": seen("precision_used") if any("precision_used" in r.data.params for r in children)
        else tags.get(names.TAG_PRECISION, "n/a"),
        "dataset": params.get("dataset", "n/a"),
        "split": _split(params, children),
        "dataset_fingerprint": seen(names.TAG_FINGERPRINT, "tags"),
        "dataset_revision": params.get("revision", "None"),
        "open_set": ", ".join(open_set) if open_set else "no",
    }


def _split(params: dict[str, str], children: list[Run]) -> str:
    """``given`` (the dataset's own split) or ``grouped`` with how it grouped, from the runs' data params."""
    split = params.get("split", "given")
    if split != "grouped":
        return split
    found = sorted({f"grouped by {r.data.params.get('data.split_groups', 'group')}"
                    + (f" at RMS {r.data.params['data.twin_threshold']}" if "data.twin_threshold" in r.data.params
                       else "") for r in children})
    return "; ".join(found) or "grouped"


def provenance_line(prov: dict[str, str]) -> str:
    """The provenance as one line for the top of a report."""
    return ("Provenance: generator " + prov.get("generator", "n/a") + f" ({prov.get('generator_params', 'n/a')}); "
            f"generations {prov.get('generations', 'n/a')}; budget {prov.get('budget', 'n/a')}, "
            f"{prov.get('epochs', 'n/a')} epochs, {prov.get('image_size', 'n/a')} px; "
            f"device {prov.get('device', 'n/a')}, precision {prov.get('precision', 'n/a')}; dataset "
            f"{prov.get('dataset', 'n/a')} fingerprint {prov.get('dataset_fingerprint', 'n/a')}, revision "
            f"{prov.get('dataset_revision', 'n/a')}, split {prov.get('split', 'given')}; "
            f"open-set: {prov.get('open_set', 'no')}.")
