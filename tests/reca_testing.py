"""Tiny model configurations and images shared by the tests (importable: pytest pythonpath)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "vision_hidden_size": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "image_size": 16,
    "vision_patch_size": 8,
    "codebook_size": 64,
    "token_patch_size": 4,
}
TEXTS = [
    "a red circle",
    "a blue square left of a yellow triangle",
    "describe the image in detail .",
    "write a short caption for this image .",
]


def tiny_pixels(n: int = 8, size: int = 16, seed: int = 0):
    """Flat-coloured blocks: few distinct patches, so a small codebook is exact."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, size, size), 0.0)
    for i in range(n):
        colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
        s = int(torch.randint(0, size // 2, (1,), generator=g))
        x[i, :, s : s + size // 2, s : s + size // 2] = colour
    return x


class MemoryTable:
    """An in-memory stand-in for :class:`reca.data.dataset.ImageTable` (same three methods)."""

    def __init__(self, pixels, captions=None):
        self.x = pixels
        self.rows = [{"id": str(i), "caption": (captions or TEXTS[:2])[i % len(captions or TEXTS[:2])]}
                     for i in range(len(pixels))]

    def __len__(self):
        return len(self.rows)

    def pixels(self, indices, kind):
        return self.x[list(indices)]

    def captions(self, indices):
        return [self.rows[i]["caption"] for i in indices]

    def ids(self, indices):
        return [self.rows[i]["id"] for i in indices]


def build_tiny_adapter(seed: int = 0, image_tokenizer: str = "patch_kmeans"):
    from reca.models.janus_ar import JanusARAdapter, TinyJanusParams

    return JanusARAdapter.build_from_scratch(TinyJanusParams(**TINY, kmeans_iters=3), texts=TEXTS,
                                             images=tiny_pixels(16), seed=seed, image_tokenizer=image_tokenizer)


_MLFLOW_DB_TEMPLATE: list = []


def fresh_mlflow_store(directory) -> str:
    """A new, empty sqlite MLflow store ``<directory>/mlflow.db``; returns its tracking URI.

    MLflow builds a new database's schema in about 10 s (its migrations); the
    schema is built once per test session and copied for every store after that.
    """
    import shutil
    import tempfile

    if not _MLFLOW_DB_TEMPLATE:
        import mlflow

        template = Path(tempfile.mkdtemp(prefix="reca-mlflow-template-")) / "mlflow.db"
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _MLFLOW_DB_TEMPLATE.append(template)
    target = Path(directory) / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MLFLOW_DB_TEMPLATE[0], target)
    return f"sqlite:///{target}"


# --------------------------------------------------------------------------------------------------------------
# Adapter-protocol checks that every adapter's tests run (issue #5, point 6). Losses are compared in eval mode,
# where adapters with random masks or noise in their loss draw fixed ones.


def one_torch_thread():
    """Generator for a fixture: torch on one thread for the test, restored after.

    Tiny models gain nothing from intra-op threads, and on a busy 2-core
    machine OpenMP's spin-waiting made the adapter tests 5-10x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reca_condition(adapter, pixels, drop=None, template: str = TEXTS[2]):
    """The RecA condition: a reconstruction template plus the adapter's own h_v of ``pixels``."""
    from reca.models.base import Condition

    return Condition(texts=[template] * len(pixels), image_embeddings=adapter.embed_images(pixels), drop=drop)


def eval_reca_loss(adapter, pixels, condition_pixels=None, drop=None) -> float:
    """The RecA generation loss in eval mode (no gradients), conditioned on h_v of ``condition_pixels``."""
    import torch

    was_training = adapter.training
    adapter.eval()
    with torch.no_grad():
        condition = reca_condition(adapter, pixels if condition_pixels is None else condition_pixels, drop)
        loss = adapter.generation_loss(condition, pixels).item()
    adapter.train(was_training)
    return loss


def overfit_reca_loss(adapter, pixels, *, steps: int, lr: float) -> tuple[float, float]:
    """Eval-mode RecA loss before and after ``steps`` AdamW steps on one batch (default freezing)."""
    import torch

    adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
    before = eval_reca_loss(adapter, pixels)
    adapter.train()
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=lr)
    for _ in range(steps):
        loss = adapter.generation_loss(reca_condition(adapter, pixels), pixels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, eval_reca_loss(adapter, pixels)


def assert_gradients_reach_exactly_the_trainable_parameters(adapter, frozen, pixels) -> None:
    """RecA + i2t backward: every frozen parameter gets no gradient, every other one gets one."""
    adapter.set_frozen(frozen)
    adapter.train()
    adapter.zero_grad(set_to_none=True)
    loss = adapter.generation_loss(reca_condition(adapter, pixels), pixels)
    loss = loss + adapter.i2t_loss(pixels, [TEXTS[3]] * len(pixels), [TEXTS[0]] * len(pixels))
    loss.backward()
    frozen_ids = {id(p) for name in frozen for p in adapter.parts()[name].parameters()}
    for name, p in adapter.named_parameters():
        if id(p) in frozen_ids:
            assert p.grad is None and not p.requires_grad, f"frozen parameter {name} received a gradient"
        else:
            assert p.grad is not None, f"trainable parameter {name} received no gradient"
    for part, module in adapter.parts().items():
        if part not in frozen and any(True for _ in module.parameters()):
            assert any(p.grad.abs().sum() > 0 for p in module.parameters()), f"{part} got only zero gradients"


def assert_round_trip_reproduces_losses(adapter, directory, pixels):
    """save_pretrained -> registry.load gives the same adapter class, losses and encoder fingerprint."""
    import torch

    from reca.models import registry

    adapter.eval()
    before = eval_reca_loss(adapter, pixels)
    with torch.no_grad():
        before_i2t = adapter.i2t_loss(pixels, [TEXTS[3]] * len(pixels), [TEXTS[0]] * len(pixels))
    adapter.save_pretrained(directory)
    loaded = registry.load(directory).eval()
    assert type(loaded) is type(adapter)
    assert abs(eval_reca_loss(loaded, pixels) - before) < 1e-5
    with torch.no_grad():
        assert torch.allclose(loaded.i2t_loss(pixels, [TEXTS[3]] * len(pixels), [TEXTS[0]] * len(pixels)),
                              before_i2t, atol=1e-5)
    assert loaded.encoder_fingerprint() == adapter.encoder_fingerprint()
    return loaded


def assert_generates_seeded_images_of_generation_size(adapter, guidance_scale: float = 3.0) -> None:
    """Guided text-to-image: (B, 3, S, S) in [-1, 1], identical for identical generator seeds."""
    import torch

    adapter.eval()
    outs = [adapter.text_to_image([TEXTS[0], TEXTS[1]], guidance_scale=guidance_scale,
                                  generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert outs[0].shape == (2, 3, adapter.generation_size, adapter.generation_size)
    assert torch.equal(outs[0], outs[1])
    assert outs[0].min() >= -1 and outs[0].max() <= 1


def assert_condition_dropout_ignores_text_and_image(adapter, pixels, other_pixels) -> None:
    """A dropped condition gives the same loss whatever its h_v; a kept one depends on h_v."""
    import torch

    drop = torch.ones(len(pixels), dtype=torch.bool)
    dropped = eval_reca_loss(adapter, pixels, drop=drop)
    assert dropped == eval_reca_loss(adapter, pixels, condition_pixels=other_pixels, drop=drop)
    kept = eval_reca_loss(adapter, pixels, condition_pixels=other_pixels)
    assert kept != dropped
    assert kept != eval_reca_loss(adapter, pixels)


def assert_edit_conditions_on_the_source(adapter, llm) -> None:
    """Editing the same instructions with other source images gives other images.

    In a randomly initialised transformer, attention adds about 1e-4 of the
    residual stream, so the condition barely moves the output; scaling the
    value and output projections of ``llm`` makes it visible.
    """
    import torch

    adapter.eval()
    with torch.no_grad():
        for layer in llm.base_model.layers:
            layer.self_attn.v_proj.weight.mul_(20)
            layer.self_attn.o_proj.weight.mul_(20)
    outs = [adapter.edit(tiny_pixels(2, seed=seed), ["make it red", "make it blue"], temperature=0.0)
            for seed in (0, 7)]
    assert outs[0].shape == (2, 3, adapter.generation_size, adapter.generation_size)
    assert not torch.equal(outs[0], outs[1])


def default_tiny_params(adapter_name: str):
    """``model.tiny`` of the repository's params.yaml, validated for ``adapter_name`` (one-key switch)."""
    from reca.params import ModelParams, load_raw

    raw = load_raw(REPO / "params.yaml")["model"]
    return ModelParams.model_validate({**raw, "adapter": adapter_name}).tiny


# --------------------------------------------------------------------------------------------------------------
# Raw image collections for the data-stage tests (issue #3), and module-level functions that spawned worker
# processes can import (functions defined in test modules cannot be pickled by reference under importlib mode).


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB"):
    """A PIL image of uniform noise: every seed gives a clearly different picture."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB").convert(mode)


def scene_image(size: int = 64, seed: int = 0):
    """A smooth picture (a few soft coloured blobs): perceptual hashes survive resizing and JPEG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for _ in range(12):
        cx, cy, r = rng.random(3) * [1, 1, 0.15] + [0, 0, 0.05]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
        img += blob[..., None] * rng.random(3)
    return Image.fromarray((img / img.max() * 255).astype(np.uint8), mode="RGB")


def save_image(root, rel: str, image, **kwargs):
    """Save ``image`` at ``root/rel`` (parents created); returns the path."""
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def image_bytes(image, fmt: str = "PNG", **kwargs) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_tar(path, members: dict[str, bytes]):
    """A webdataset-style .tar shard with ``members`` (name -> bytes), in the given order."""
    import io
    import tarfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def snapshot_tree(root) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove a stage modified nothing)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class FakeTracker:
    """Records what a stage logs through its :class:`reca.tracking.mlflow_run.StageRun` handle."""

    def __init__(self):
        self.active = False  # like a StageRun on a non-zero rank: nothing reaches MLflow
        self.run_id = None
        self.metrics: dict = {}
        self.artifacts: list = []
        self.tags: dict = {}
        self.params: dict = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(Path(path).name)

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_params(self, params):
        self.params.update(params)


def times_ten(x: int) -> int:
    """A worker function for the parallel-map tests."""
    return x * 10


def exit_on_seven(x: int) -> int:
    """A worker function that kills its process on item 7 (a decoder crash, an OOM kill)."""
    import os

    if x == 7:
        os._exit(3)
    return x


def tool_env(**extra: str) -> dict:
    """The environment for running the project's tools (dvc, reca, flows) in a test repository.

    The venv's ``bin`` first on PATH, a git identity, and no inherited MLflow
    tracking URI or ``RECA_*`` variables, so runs land in that repository's store.
    """
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "RECA_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", GIT_AUTHOR_NAME="test",
               GIT_AUTHOR_EMAIL="test@localhost", GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@localhost")
    env.update(extra)
    return env


def run_tool(cmd: list, cwd, *, check: bool = True, timeout: int = 300, **extra_env: str):
    """Run ``cmd`` in ``cwd`` with :func:`tool_env`; on ``check``, fail the test with its output."""
    import subprocess

    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=tool_env(**extra_env), capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-5000:]}")
    return out


def make_dvc_repo(root, files: dict) -> Path:
    """A committed git + DVC repository at ``root`` holding ``files`` (path -> text) and an empty MLflow store."""
    import sys

    root = Path(root)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    gitignore = root / ".gitignore"
    gitignore.write_text("mlflow.db\nmlartifacts/\n" + (gitignore.read_text() if gitignore.exists() else ""))
    fresh_mlflow_store(root)
    run_tool(["git", "init", "-q"], root)
    run_tool([Path(sys.executable).parent / "dvc", "init", "-q"], root)
    run_tool(["git", "add", "-A"], root)
    run_tool(["git", "commit", "-qm", "init"], root)
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """A server process started in its own session, ready once ``health_url`` answers 200; stops its group.

    Use as a context manager; ``stop()`` is idempotent. Output goes to ``log``
    (shown in the failure message if the server never becomes healthy).
    """

    def __init__(self, cmd: list, health_url: str, log, *, cwd=None, env: dict | None = None,
                 timeout: float = 90.0) -> None:
        self.cmd, self.health_url, self.log = [str(c) for c in cmd], health_url, Path(log)
        self.cwd, self.env, self.timeout = cwd, env, timeout
        self.proc = None

    def start(self) -> BackgroundServer:
        import subprocess
        import time
        import urllib.request

        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env or tool_env(), stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"{' '.join(self.cmd)} not healthy at {self.health_url} within {self.timeout:.0f} s:\n"
                             f"{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        import contextlib
        import os
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        # The whole process group: servers spawn workers (uvicorn, gunicorn) that must not outlive the test.
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # children that ignored SIGTERM after their leader exited
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def log_tiny_pipeline(root, key: str, *, exp_name: str | None = None, lr: float = 1e-3,
                      reca_score: float = 0.6) -> str:
    """Log one pipeline run through ``reca.tracking`` as the stages do; return the parent run id.

    `sft` and `train` log loss curves and params, `evaluate` logs per-model
    GenEval scores and a sample grid under ``report/``. The store is whatever
    ``MLFLOW_TRACKING_URI`` names; ``root`` holds params.yaml and the grid.
    """
    import os

    from PIL import Image

    from reca.tracking.mlflow_run import stage_run

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(f"train:\n  lr: {lr}\n")
    grid = root / "report" / "prompts.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (96, 32), (200, 40, 40)).save(grid)
    saved = {k: os.environ.get(k) for k in ("RECA_PIPELINE_KEY", "DVC_EXP_NAME")}
    os.environ["RECA_PIPELINE_KEY"] = key
    if exp_name:
        os.environ["DVC_EXP_NAME"] = exp_name
    try:
        for stage, terms in (("sft", ("loss", "loss_t2i")), ("train", ("loss", "loss_reca"))):
            with stage_run(stage, root=root, params_file=root / "params.yaml") as run:
                run.log_params({f"{stage}.lr": lr, f"{stage}.steps": 4})
                for step in (2, 4):
                    run.log_metrics({t: 3.0 / step for t in terms}, step=step)
        with stage_run("evaluate", root=root, params_file=root / "params.yaml") as run:
            scores = {"sft": 0.4, "reca": reca_score}
            for model, score in scores.items():
                run.log_metrics({f"{model}.overall": score, f"{model}.single_object": score,
                                 f"{model}.single_object_prompts": 1.0, f"{model}.colors": score / 2,
                                 f"{model}.recon_psnr": 20.0})
            run.log_artifact(grid.parent, artifact_path="report")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    import mlflow

    return mlflow.get_run(run.run_id).data.tags["mlflow.parentRunId"]


def two_stage_dvc_yaml(first: str, second: str, data: str, params: str | None = None) -> str:
    """``dvc.yaml`` of ``first`` (reads ``data``, writes mid.txt) then ``second`` (writes final.txt).

    Each stage runs ``stage.py NAME SRC OUT`` with this interpreter; ``params``
    names a params.yaml section ``first`` depends on.
    """
    import sys

    py = sys.executable
    params_line = f"\n    params: [{params}]" if params else ""
    return (f"stages:\n"
            f"  {first}:\n    cmd: {py} stage.py {first} {data}/a.txt mid.txt\n    deps: [{data}, stage.py]"
            f"{params_line}\n    outs: [mid.txt]\n"
            f"  {second}:\n    cmd: {py} stage.py {second} mid.txt final.txt\n    deps: [mid.txt, stage.py]\n"
            f"    outs: [final.txt]\n")


def isolated_mlflow_store(tmp_path, monkeypatch):
    """A fresh MLflow store in ``tmp_path`` as ``MLFLOW_TRACKING_URI``, no pipeline variables inherited.

    Returns ``(client, uri)``; the client's registry is the same store.
    """
    import mlflow

    for var in ("RECA_PARENT_RUN_ID", "RECA_PIPELINE_KEY", "DVC_STAGE", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    uri = fresh_mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), uri
