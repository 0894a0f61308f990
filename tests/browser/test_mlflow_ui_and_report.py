"""In headless Chromium: the MLflow UI served on 127.0.0.1 and the `reca report` HTML (slow).

Two pipeline runs (DVC experiments ``lr-low`` and ``lr-high``) are logged
through the project's tracking code and reported with `reca report`; then a
real browser checks what a person would look at: the runs in the MLflow UI,
a stage's metrics, its metric charts, and the report's tables and charts.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y
chromium chromium-driver``) and the ``selenium`` package; skipped otherwise.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from reca_fixtures.tools import BackgroundServer, free_port, tool_env
from reca_fixtures.tracking import fresh_mlflow_store, log_tiny_pipeline

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60


def _missing() -> str | None:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return f"{CHROMIUM} or {CHROMEDRIVER} absent: apt-get install -y chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Two logged pipeline runs, their report, and the ids the checks look for."""
    import os

    import mlflow

    from reca.reporting.run_report import ReportRequest, write_report

    root = tmp_path_factory.mktemp("browser")
    uri = fresh_mlflow_store(root)
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        low = log_tiny_pipeline(root / "low", "k-low", exp_name="lr-low", lr=1e-4, reca_score=0.5)
        high = log_tiny_pipeline(root / "high", "k-high", exp_name="lr-high", lr=1e-3, reca_score=0.7)
        report = write_report(ReportRequest(exp_names=["lr-low", "lr-high"], tracking_uri=uri), root / "report.html")
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    client = mlflow.MlflowClient(tracking_uri=uri)
    children = {(r.data.tags["mlflow.parentRunId"], r.data.tags["reca.stage"]): r.info.run_id
                for r in client.search_runs([client.get_experiment_by_name("reca").experiment_id])
                if "reca.stage" in r.data.tags}
    return {"root": root, "uri": uri, "experiment": client.get_experiment_by_name("reca").experiment_id,
            "report": Path(report["report"]), "evaluate": children[(high, "evaluate")],
            "train": children[(low, "train")]}


@pytest.fixture(scope="module")
def mlflow_ui(logged):
    port = free_port()
    cmd = [Path(sys.executable).parent / "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", logged["uri"]]
    env = tool_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with BackgroundServer(cmd, f"http://127.0.0.1:{port}/health", logged["root"] / "mlflow-server.log", env=env,
                          timeout=110):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Every flag keeps Chromium off the network it has no access to (updates, sync, field trials).
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for_text(driver, *needles: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        text = d.find_element("tag name", "body").text
        return text if all(n in text for n in needles) else False

    return WebDriverWait(driver, WAIT, poll_frequency=0.5).until(shown, f"page never showed {needles}")


def test_mlflow_ui_lists_the_pipeline_runs(browser, mlflow_ui, logged):
    browser.get(f"{mlflow_ui}/#/experiments/{logged['experiment']}/runs")
    _wait_for_text(browser, "lr-low", "lr-high", "report")


def test_mlflow_ui_shows_a_stage_runs_metrics_and_its_parent(browser, mlflow_ui, logged):
    browser.get(f"{mlflow_ui}/#/experiments/{logged['experiment']}/runs/{logged['evaluate']}")
    text = _wait_for_text(browser, "reca.single_object", "sft.single_object", "Parent run")
    assert "lr-high" in text  # the parent, by name
    assert "0.7" in text  # reca.single_object of lr-high


def test_mlflow_ui_draws_the_training_loss_charts(browser, mlflow_ui, logged):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{mlflow_ui}/#/experiments/{logged['experiment']}/runs/{logged['train']}/model-metrics")
    _wait_for_text(browser, "loss_reca")
    lines = WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.querySelectorAll('.js-plotly-plot path.js-line').length") >= 2
        and d.execute_script("return document.querySelectorAll('.js-plotly-plot').length"),
        "no plotted lines in the metric charts")
    assert lines >= 2


def test_report_shows_tables_and_charts_without_any_network_request(browser, logged):
    browser.get(logged["report"].as_uri())
    text = _wait_for_text(browser, "Evaluation", "lr-low · reca", "lr-high · reca", "Params that differ")
    assert "train.lr" in text
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.className, i.complete && i.naturalWidth > 0])")
    assert [c for c, _ in images].count("chart") == 3 and [c for c, _ in images].count("grid") == 2
    assert all(ok for _, ok in images), images
    # Everything the page shows came from the file itself.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
