"""Running the project's tools in a scratch repository: environment, subprocesses, DVC repos, local servers."""

from __future__ import annotations

from pathlib import Path

from reca_fixtures.tracking import fresh_mlflow_store


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
