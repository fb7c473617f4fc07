"""The reliability suite: bad input, faults mid-run, secrets. Counts what it tried and prints it.

Each test carries a marker of its family (``bad_input``, ``fault``, ``secrets``); the terminal
summary ends with ``reliability: N bad inputs tried, M faults injected, secrets found = K``.
Secrets found are counted by the :func:`scan` fixture (every occurrence of a secret in any file or
output it is shown), so a leak shows up in the count even before the test's assert.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the helpers beside this file
sys.path.insert(0, str(HERE.parent))  # tests/_openai_server.py

from _rel import COUNTS, write_folder  # noqa: E402

FAMILIES = {"bad_input": "bad input", "fault": "fault", "secrets": "secrets and data flow"}


def pytest_configure(config: pytest.Config) -> None:
    for name, what in FAMILIES.items():
        config.addinivalue_line("markers", f"{name}: reliability family: {what}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and not report.skipped:
        keywords = report.keywords
        for family in ("bad_input", "fault"):
            if family in keywords:
                COUNTS[family] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not any(COUNTS.values()):
        return
    terminalreporter.write_sep("-", "reliability")
    terminalreporter.write_line(
        f"reliability: {COUNTS['bad_input']} bad inputs tried, {COUNTS['fault']} faults injected, "
        f"{COUNTS['secrets_checked']} places searched for secrets, secrets found = {COUNTS['secrets_found']}"
    )


# --- scanning for secrets ------------------------------------------------------------------------
@pytest.fixture
def scan():
    """``scan(secret, *paths_or_texts)`` → where the secret appears (files under folders, and texts)."""

    def find(secret: str, *where: object) -> list[str]:
        needle = secret.encode()
        hits = []
        for item in where:
            if isinstance(item, Path):
                files = [item] if item.is_file() else [p for p in item.rglob("*") if p.is_file()]
                for path in files:
                    COUNTS["secrets_checked"] += 1
                    if needle in path.read_bytes():
                        hits.append(str(path))
            else:
                COUNTS["secrets_checked"] += 1
                if secret in str(item):
                    hits.append(f"text: ...{str(item)[max(0, str(item).find(secret) - 80):][:200]}")
        COUNTS["secrets_found"] += len(hits)
        return hits

    return find


# --- environment: a private store, cache and dataset per test --------------------------------------
@pytest.fixture
def store(tmp_path, mlflow_uri, monkeypatch) -> Path:
    """``mlflow_uri``'s fresh store in ``tmp_path`` (pre-migrated: a copy of the session's template), with its own cache."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SYNTHMED_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    db = tmp_path / "mlflow.db"
    assert mlflow_uri == f"sqlite:///{db}"
    monkeypatch.setenv("SYNTHMED_CACHE_DIR", str(tmp_path / "cache"))
    return db


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """Two classes x 8 images of 16 px."""
    return write_folder(tmp_path / "data", {"a": 8, "b": 8})


