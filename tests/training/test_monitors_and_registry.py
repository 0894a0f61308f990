"""Run-health monitors, the tracking-server check and model registration."""

from __future__ import annotations

import socket

import pytest

from reca.tracking.reachability import TrackingUnreachableError, ensure_reachable
from reca.training.monitors import TokenCopyingMonitor, peak_memory_mb


def test_token_copying_monitor_warns_once_below_the_ratio():
    monitor = TokenCopyingMonitor(0.2, baseline=5.0)
    assert monitor.check(10, 1.5) is None
    message = monitor.check(20, 0.9)
    assert message is not None and "step 20" in message and "understanding_size" in message
    assert monitor.check(30, 0.1) is None  # once is enough
    assert monitor.warned_at == 20


def test_token_copying_monitor_needs_a_baseline():
    assert TokenCopyingMonitor(0.5).check(1, 0.0) is None
    with pytest.raises(ValueError):
        TokenCopyingMonitor(1.5)


def test_peak_memory_is_reported_in_megabytes():
    assert 10 < peak_memory_mb() < 24 * 1024


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_stops_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(TrackingUnreachableError, match="mlflow_fallback_local"):
        ensure_reachable(fallback_local=False, root=tmp_path, timeout=1.0)


def test_unreachable_tracking_server_falls_back_to_local_when_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    uri = ensure_reachable(fallback_local=True, root=tmp_path, timeout=1.0)
    assert uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    import os

    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_local_store_needs_no_probe(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ensure_reachable(fallback_local=False, root=tmp_path) == "local"


def test_final_model_is_registered_and_tagged_with_metrics(monkeypatch, tmp_path):
    import mlflow

    from reca.training.registration import read_pointer, register, tag_version_with_metrics, write_pointer

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    info = register(run.info.run_id, "reca-test")
    write_pointer(model_dir, info)
    assert read_pointer(model_dir) == info
    assert tag_version_with_metrics(model_dir, {"overall": 0.5})
    client = mlflow.MlflowClient()
    version = client.get_model_version("reca-test", info["version"])
    assert version.run_id == run.info.run_id
    assert version.tags["eval.overall"] == "0.5"
    assert version.source.endswith("/model")
    second = register(run.info.run_id, "reca-test")
    assert int(second["version"]) == int(info["version"]) + 1


def test_only_a_real_launcher_makes_a_worker(monkeypatch):
    from reca.params import TrainParams
    from reca.training.launch import WORKER_ENV, needs_launch

    for key in ("MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "RANK", "LOCAL_RANK", WORKER_ENV):
        monkeypatch.delenv(key, raising=False)
    two = TrainParams(processes=2)
    assert needs_launch(two)
    # what an earlier world-of-one stage in the same process leaves behind: still not a worker
    for key in ("RANK", "LOCAL_RANK"):
        monkeypatch.setenv(key, "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert needs_launch(two)
    monkeypatch.setenv("MASTER_PORT", "29500")  # torchrun / deepspeed set up a rendezvous
    assert not needs_launch(two)
    monkeypatch.delenv("MASTER_PORT")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not needs_launch(two)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv(WORKER_ENV, "1")  # our own relaunch
    assert not needs_launch(two)


def test_launch_commands(tmp_path):
    from reca.params import TrainParams
    from reca.training.launch import launch_command, needs_launch

    torchrun = launch_command(TrainParams(processes=2), ["train", "--output", "m"])
    assert torchrun[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=2" in torchrun and torchrun[-4:] == ["reca.cli", "train", "--output", "m"]
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-0 slots=8\nworker-1 slots=8\n")
    ds = launch_command(TrainParams(launcher="deepspeed", hostfile=str(hostfile)), ["train"])
    assert ds[1:3] == ["--hostfile", str(hostfile)] and "--no_local_rank" in ds
    assert not needs_launch(TrainParams())
    with pytest.raises(FileNotFoundError, match="hostfile"):
        launch_command(TrainParams(launcher="deepspeed", hostfile=str(tmp_path / "missing")), ["train"])
