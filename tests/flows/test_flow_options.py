"""The Prefect flow's retry policy, pull targets and deployment command line (no Prefect server)."""

from __future__ import annotations

import importlib.util
import sys

from reca_fixtures import REPO


def _load(name: str):
    """Import a module from flows/ the way `python flows/<name>.py` finds its siblings."""
    if str(REPO / "flows") not in sys.path:
        sys.path.insert(0, str(REPO / "flows"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "flows" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_retries_back_off_by_doubling():
    flow = _load("reca_pipeline")
    assert flow.retry_options(3, 10.0) == {"retries": 3, "retry_delay_seconds": [10.0, 20.0, 40.0]}
    assert flow.retry_options(0, 10.0) == {"retries": 0, "retry_delay_seconds": []}


def test_pull_targets_are_the_root_dvc_files_not_the_dvc_directory(tmp_path):
    flow = _load("reca_pipeline")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "data.dvc").write_text("outs: []\n")
    (tmp_path / "extra.dvc").write_text("outs: []\n")
    assert flow.pull_targets(tmp_path) == ["data.dvc", "extra.dvc"]
    assert flow.pull_targets(REPO) == ["data.dvc"]


def test_deployment_parameters_follow_the_command_line():
    deploy = _load("deploy")
    args = deploy.build_parser().parse_args(["--target", "train", "--no-pull", "--data-retries", "5",
                                             "--retry-delay", "2", "--repo", "/srv/reca"])
    assert deploy.deployment_parameters(args) == {
        "targets": ["train"], "repo": "/srv/reca", "pull_data": False, "data_retries": 5, "stage_retries": 0,
        "retry_delay_seconds": 2.0}
    defaults = deploy.build_parser().parse_args([])
    assert (defaults.name, defaults.cron) == ("nightly", "0 3 * * *")
    # Every parameter the deployment sets is one the flow accepts.
    flow = _load("reca_pipeline")
    assert set(deploy.deployment_parameters(defaults)) <= set(flow.reca_pipeline.parameters.properties)


def test_serving_without_a_prefect_server_is_refused_with_the_fix(monkeypatch, capsys):
    deploy = _load("deploy")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert deploy.main([]) == 2
    err = capsys.readouterr().err
    assert "make prefect-server" in err and "PREFECT_API_URL=http://127.0.0.1:4200/api" in err


def test_prefect_yaml_deploys_this_flow_with_parameters_it_accepts():
    import yaml

    flow = _load("reca_pipeline")
    (deployment,) = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    path, name = deployment["entrypoint"].split(":")
    assert (REPO / path).exists() and getattr(flow, name).name == "reca-pipeline"
    assert set(deployment["parameters"]) <= set(flow.reca_pipeline.parameters.properties)
