"""``benchmarks/generator_leaderboard.py``: quality rows and matched-steps comparisons, end to end on a tiny folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "generator_leaderboard.py"


def _load():
    spec = importlib.util.spec_from_file_location("generator_leaderboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_leaderboard_builds_its_tables_and_replaces_the_docs_block(image_folder, mlflow_uri, tmp_path):
    board = _load()
    root = image_folder(tmp_path / "data", per_class=16, size=16)
    docs = tmp_path / "generators.md"
    docs.write_text(f"# Generators\n\nbefore\n\n{board.BEGIN}\nOLD-BLOCK-TEXT\n{board.END}\n\nafter\n")
    text = board.main([
        "--dataset", "imagefolder", "--data-dir", str(root), "--image-size", "16", "--real-frac", "0.5",
        "--equivalent-fracs", "1.0", "--generators", "elastic,pca", "--generator-options", "pca:components=3",
        "--simulations", "2", "--splits", "given", "--epochs", "1", "--experiment", "board-test",
        "--set", "test_frac=0.25", "--set", "val_frac=0", "--output", str(tmp_path / "out"), "--docs", str(docs),
        "--quiet"])
    # quality: one row per generator, fit time only for the learned one, floors beside every realism number
    assert "| `elastic` | — |" in text and "| `pca` `components=3` |" in text
    assert "fidelity left" in text and "FD (floor)" in text
    # comparisons: none, the controls and synthetic-pca (elastic learns nothing: no sweep of its own)
    for cell in ("| `none` | 2 |", "| `oversample` | 2 |", "| `mri` | 2 |", "| `synthetic-pca` | 2 |", "| `none` at 1 | 2 |"):
        assert cell in text, cell
    assert "synthetic-elastic" not in text
    assert "p_Holm" in text and "1-NN lookup" in text and "class prior" in text
    record = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    pairs = {(p["policy"], p["baseline_policy"]) for p in record["comparisons"][0]["pairs"] if p["kind"] == "policy"}
    assert {("synthetic-pca", "none"), ("synthetic-pca", "oversample"), ("synthetic-pca", "mri"), ("mri", "none")} <= pairs
    content = docs.read_text()
    assert "OLD-BLOCK-TEXT" not in content and content.startswith("# Generators\n\nbefore") and content.endswith("after\n")
    assert text in content
