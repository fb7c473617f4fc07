"""The MLflow UI as users see it: a small sweep in a real ``mlflow server``, driven by headless Chromium.

Checks what the UI tutorial (docs/tutorials/mlflow-ui.md) promises: the experiment is tagged as
model training and reaches its runs through the "Model training" switch; the sweep's parent run
holds its child runs nested; the children group by the ``synthmed.cell`` tag with
``test_cross_entropy`` compared across the groups; the parent's summary metrics are there; and the
report's HTML artifact renders with its figures.

Regenerate the tutorial's screenshots (small PNGs under docs/img/) with

    SYNTHMED_SCREENSHOTS=docs/img python -m pytest tests/test_mlflow_ui.py

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and ``selenium``.
Without a browser the test skips with a reason, except under ``CI``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "chapter7-smoke"
SHOTS = os.environ.get("SYNTHMED_SCREENSHOTS")
CELLS = ("cnn|none|0.5", "cnn|synthetic|0.5")

# A tiny sweep (2 policies x 1 real fraction x 2 simulations, 32 px, 1 epoch) on toy data: the
# runs are real synthmed runs; their numbers mean nothing (about ln 4 = 1.386: 4 classes, 1 epoch).
BUILD_SWEEP = textwrap.dedent("""
    import json, sys, torch
    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits
    from synthmed.sweep import sweep

    g = torch.Generator().manual_seed(0)

    def make(n):
        labels = torch.arange(n) % 4
        images = torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)
        images[:, :, :8, :8] = (labels * 60).view(-1, 1, 1, 1).to(torch.uint8)
        return ImageSet(images, labels.long())

    classes = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
    splits = Splits(train=make(64), test=make(16), classes=classes, fingerprint="toy", meta={"source": "toy"})
    config = Config(image_size=32, epochs=1, batch_size=16, device="cpu", experiment=sys.argv[1], quiet=True)
    result = sweep(config, policies="none,synthetic", real_fracs="0.5", simulations=2, seed=0, splits=splits)
    print(json.dumps({"parent": result.parent_run_id, "sweep_id": result.sweep_id}))
""")


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if chromium and driver:
        return chromium, driver
    reason = f"no headless browser: chromium={chromium}, chromedriver={driver} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A sqlite store holding one small sweep; returns its URI, folder, experiment id and run ids."""
    import json

    import mlflow

    root = tmp_path_factory.mktemp("mlflow-ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, SYNTHMED_CACHE_DIR=str(root / "cache"), MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", BUILD_SWEEP, EXPERIMENT], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ids = json.loads(out.stdout.strip().splitlines()[-1])
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], f"tags.`synthmed.sweep_id` = '{ids['sweep_id']}'")
    children = [r for r in runs if r.data.tags.get("synthmed.sweep") != "1"]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    return {"uri": uri, "root": root, "experiment": experiment, "children": children, **ids}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(store):
    """``mlflow server`` on 127.0.0.1 over the store; yields its base URL."""
    port = _free_port()
    root = store["root"]
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", store["uri"],
           "--default-artifact-root", str(root / "served-artifacts"), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker: the group this test started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,900", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


# --- helpers -----------------------------------------------------------------------------------------
def _wait(driver, xpath: str, timeout: float = 45):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.XPATH, xpath)))


def _click(driver, xpath: str, timeout: float = 45) -> None:
    """Click the element once it can take a click.

    The UI renders tree nodes and menu items before it lays them out (a freshly expanded
    artifact folder is in the DOM while its children still animate in), so a click on a merely
    present element can fail with "element not interactable". Wait for it to be clickable and
    retry while it is replaced or covered.
    """
    from selenium.common.exceptions import (ElementClickInterceptedException,
                                            ElementNotInteractableException,
                                            StaleElementReferenceException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def clicked(d):
        try:
            element = ec.element_to_be_clickable((By.XPATH, xpath))(d)
            if not element:
                return False
            element.click()
            return True
        except (ElementClickInterceptedException, ElementNotInteractableException,
                StaleElementReferenceException):
            return False

    WebDriverWait(driver, timeout, poll_frequency=0.25).until(clicked, f"never clickable: {xpath}")


def _text(value: str) -> str:
    return f"//*[normalize-space(text())='{value}']"


def _shot(driver, name: str) -> None:
    """Save a screenshot to $SYNTHMED_SCREENSHOTS/ui-<name>.png (palette PNG: small in git)."""
    if not SHOTS:
        return
    from PIL import Image

    folder = Path(SHOTS) if Path(SHOTS).is_absolute() else REPO / SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ui-{name}.png"
    driver.save_screenshot(str(path))
    Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)


def _close_assistant(driver) -> None:
    """Close the MLflow Assistant side panel, when shown (it covers part of the table)."""
    from selenium.webdriver.common.by import By

    for panel_close in driver.find_elements(
            By.XPATH, "//*[normalize-space(text())='MLflow Assistant']/following::button[@aria-label='Close'][1]"):
        if panel_close.is_displayed():
            panel_close.click()
            time.sleep(0.5)


def _runs_page(driver, server, store) -> None:
    driver.get(f"{server}/#/experiments/{store['experiment'].experiment_id}/runs?workflowType=machine_learning")
    _wait(driver, f"//a[normalize-space(.)='sweep-{store['sweep_id'][:8]}']")
    _close_assistant(driver)


def _expand_parent(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()


# --- the checks --------------------------------------------------------------------------------------
def test_experiment_says_it_is_model_training_and_the_switch_leads_to_the_runs(store, server, browser):
    assert store["experiment"].tags.get("mlflow.experimentKind") == "custom_model_development"
    browser.get(f"{server}/#/experiments/{store['experiment'].experiment_id}")
    switch = _wait(browser, _text("Model training"))
    _wait(browser, f"//a[normalize-space(.)='{EXPERIMENT}']")  # MLflow 3.17 lands on its GenAI overview
    time.sleep(2)
    _shot(browser, "landing")
    browser.execute_script("arguments[0].click()", switch)  # a first-visit popover may cover it
    _wait(browser, f"//a[normalize-space(.)='sweep-{store['sweep_id'][:8]}']")
    assert "/runs" in browser.current_url


def test_parent_run_holds_its_children_nested(store, server, browser):
    _runs_page(browser, server, store)
    names = [r.info.run_name for r in store["children"]]
    for name in names:  # collapsed: only the parent is listed
        assert not browser.find_elements("xpath", f"//a[normalize-space(.)='{name}']")
    _expand_parent(browser)
    for name in names:
        _wait(browser, f"//a[normalize-space(.)='{name}']", timeout=15)
    _shot(browser, "nested")


def test_children_group_by_cell_with_cross_entropy_compared(store, server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _runs_page(browser, server, store)
    _click(browser, "//button[normalize-space(.)='Group by']")
    _click(browser, "//*[@role='menuitemcheckbox' and normalize-space(.)='synthmed.cell']")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    for cell in CELLS:
        _wait(browser, f"//*[normalize-space(.)='Group: {cell}']", timeout=15)
    _click(browser, "//button[normalize-space(.)='Columns']")
    column = _wait(browser, "//span[@title='test_cross_entropy']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", column)
    column.click()
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    _wait(browser, "//*[contains(@class, 'ag-header-cell')][normalize-space(.)='test_cross_entropy']", timeout=15)
    time.sleep(1)
    _shot(browser, "grouped")
    grid = browser.find_element(By.CSS_SELECTOR, ".ag-root").text
    for run in store["children"]:  # every child's loss is in the table, under its group
        assert f"{run.data.metrics['test_cross_entropy']:.6f}"[:7] in grid, (run.info.run_name, grid[-1500:])
    assert "(average)" in grid or all(f"Group: {c}" in grid for c in CELLS)


def test_parent_run_shows_the_summary_metrics(store, server, browser):
    browser.get(f"{server}/#/experiments/{store['experiment'].experiment_id}/runs/{store['parent']}"
                "?workflowType=machine_learning")
    for metric in ("cnn.synthetic.0.5.test_cross_entropy.median", "cnn.none.0.5.test_cross_entropy.median",
                   "cnn.synthetic_vs_none.0.5.test_cross_entropy.median_diff", "simulations_finished"):
        _wait(browser, _text(metric))
    _close_assistant(browser)
    _shot(browser, "parent-metrics")


def test_report_artifact_renders_with_its_figures(store, server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server}/#/experiments/{store['experiment'].experiment_id}/runs/{store['parent']}"
                "/artifacts?workflowType=machine_learning")
    _click(browser, "//*[@data-testid='artifact-tree-node' and @artifact-name='report']")
    _click(browser, "//*[@data-testid='artifact-tree-node' and @artifact-name='report.html']")
    _close_assistant(browser)
    frame = _wait(browser, "//iframe")
    _wait(browser, "//iframe")  # the preview is an iframe over the fetched HTML
    browser.switch_to.frame(frame)
    try:
        _wait(browser, "//h1[starts-with(normalize-space(.), 'Sweep ')]")
        deadline = time.monotonic() + 60  # generous: the suite runs on a loaded 2-core machine
        while True:  # every figure is embedded and decoded
            images = browser.find_elements(By.TAG_NAME, "img")
            widths = [browser.execute_script("return arguments[0].naturalWidth", i) for i in images]
            if len(images) >= 2 and all(w > 0 for w in widths) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(images) >= 2 and all(w > 0 for w in widths), widths
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Paired comparisons" in body and "synthetic vs none" in body
        browser.switch_to.default_content()
        _shot(browser, "report")
        browser.switch_to.frame(frame)
        figures = browser.find_elements(By.XPATH, "//h2[normalize-space(.)='Figures']") or images
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", figures[0])
    finally:
        browser.switch_to.default_content()
    time.sleep(0.5)
    _shot(browser, "report-figures")
