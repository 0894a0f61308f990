"""`reca report`: a self-contained HTML report of one or several pipeline runs, logged to MLflow."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import pytest
from PIL import Image

from reca.cli import main
from reca.reporting.run_report import ReportRequest, write_report
from reca_fixtures.tracking import isolated_mlflow_store, log_tiny_pipeline


class _Page(HTMLParser):
    """Every tag with its attributes, and every table's cell text by table class."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table = attributes.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _row(table: list[list[str]], first_cell_prefix: str) -> list[str]:
    return next(r for r in table if r and r[0].startswith(first_cell_prefix))


@pytest.fixture
def store(tmp_path, monkeypatch):
    return isolated_mlflow_store(tmp_path, monkeypatch)


def test_one_run_report_is_self_contained_has_every_section_and_is_logged_to_the_run(store, tmp_path):
    client, uri = store
    parent = log_tiny_pipeline(tmp_path / "a", "run-a")
    result = write_report(ReportRequest(tracking_uri=uri), tmp_path / "report.html")
    assert result["runs"] == [parent] and result["logged_to"] == parent

    page = _parse(tmp_path / "report.html")
    # Nothing is fetched: no scripts, no stylesheets, every image a decodable embedded PNG.
    names = [tag for tag, _ in page.tags]
    assert "script" not in names and "link" not in names
    assert "http://" not in (tmp_path / "report.html").read_text() and "https://" not in (
        tmp_path / "report.html").read_text()
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))).verify()
    classes = [attrs["class"] for attrs in images]
    # per-task bars + sft and train loss curves; one sample grid
    assert classes.count("chart") == 3 and classes.count("grid") == 1

    evaluation = page.tables["evaluation"]
    assert evaluation[0][:3] == ["metric", "sft", "reca"]
    assert _row(evaluation, "single_object")[1:3] == ["40.0 / 100.0", "60.0 / 100.0"]  # % images / % prompts
    assert _row(evaluation, "overall")[3] == "+20.0"  # the delta column
    stage_metrics = page.tables["stage-metrics"]
    assert _row(stage_metrics, "train.loss_reca")[1] == "0.75"  # the final value: 3.0 / step 4
    assert _row(page.tables["runs"], "pipeline run-a")[2] == "FINISHED"

    logged = {a.path for a in client.list_artifacts(parent, "reca-report")}
    assert logged == {"reca-report/report.html"}


def test_several_runs_are_compared_by_experiment_name_and_logged_to_a_report_run(store, tmp_path):
    client, uri = store
    low = log_tiny_pipeline(tmp_path / "low", "run-low", exp_name="lr-low", lr=1e-4, reca_score=0.5)
    high = log_tiny_pipeline(tmp_path / "high", "run-high", exp_name="lr-high", lr=1e-3, reca_score=0.7)
    result = write_report(ReportRequest(exp_names=["lr-low", "lr-high"], tracking_uri=uri), tmp_path / "cmp.html")
    assert result["runs"] == [low, high]

    page = _parse(tmp_path / "cmp.html")
    evaluation = page.tables["evaluation"]
    assert evaluation[0][1:] == ["lr-low · sft", "lr-low · reca", "lr-high · sft", "lr-high · reca"]
    assert [cell.split(" / ")[0] for cell in _row(evaluation, "single_object")[1:]] == ["40.0", "50.0", "40.0",
                                                                                        "70.0"]
    assert _row(page.tables["params"], "train.lr")[1:] == ["0.0001", "0.001"]
    assert len([a for t, a in page.tags if t == "img" and a.get("class") == "grid"]) == 2

    report_run = client.get_run(result["logged_to"])
    assert report_run.data.tags["reca.kind"] == "report"
    assert report_run.data.tags["reca.report.runs"] == f"{low},{high}"
    assert {a.path for a in client.list_artifacts(report_run.info.run_id, "reca-report")} == {
        "reca-report/report.html"}
    # The compared runs themselves are left as they were.
    assert not client.list_artifacts(low, "reca-report")


def test_reca_report_without_runs_exits_2_with_the_fix(store, tmp_path, capsys):
    client, uri = store
    client.create_experiment("reca")
    assert main_exit(["report", "--tracking-uri", uri, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "no pipeline runs" in err and "dvc repro" in err
    assert not (tmp_path / "r.html").exists()


def main_exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)
