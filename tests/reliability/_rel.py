"""Helpers of the reliability suite (imported by its conftest and tests)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COUNTS = {"bad_input": 0, "fault": 0, "secrets_checked": 0, "secrets_found": 0}


def runs_in(db: Path) -> list[tuple[str, str, dict[str, str]]]:
    """(run id, status, tags) of every run, read with sqlite3 (safe while another process writes)."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
        try:
            rows = con.execute("select run_uuid, status from runs").fetchall()
            tags = con.execute("select run_uuid, key, value from tags").fetchall()
        except sqlite3.OperationalError:
            return []
    by_run: dict[str, dict[str, str]] = {}
    for run_id, key, value in tags:
        by_run.setdefault(run_id, {})[key] = value
    return [(r, s, by_run.get(r, {})) for r, s in rows]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OPENAI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MLFLOW_ENABLE_ASYNC_LOGGING="false",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "synthmed.cli", *args]


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}:\n{out[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- tiny datasets -----------------------------------------------------------------------------------
def png_bytes(seed: int, size: int = 16, mode: str = "L") -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="L")
    if mode == "I;16":
        image = Image.fromarray((pixels.astype("<u2") * 257))  # mode I;16
    elif mode != "L":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root: Path, counts: dict[str, int], size: int = 16, mode: str = "L") -> Path:
    """``root/<class>/<i>.png``: a tiny imagefolder dataset."""
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / c / f"{i}.png").write_bytes(png_bytes(hash((c, i)) % 1000, size, mode))
    return root


def write_hub_layout(folder: Path, train: list, test: list, names: list[str]) -> Path:
    """A tiny local copy with the hub's layout: data/{train,test}-00000-of-00001.parquet."""
    import datasets

    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=names))
    for split, rows in (("train", train), ("test", test)):
        columns = {"image": [{"bytes": b, "path": f"{split}_{i}.png"} for i, (b, _) in enumerate(rows)],
                   "label": [label for _, label in rows]}
        datasets.Dataset.from_dict(columns, features=features).to_parquet(
            str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


TINY = ["--image-size", "16", "--epochs", "1", "--batch-size", "8", "--gradcam", "false", "--log-model", "false",
        "--register", "none", "--quiet"]
