"""Failing fast when the MLflow tracking server is down, instead of hours into a run.

A remote tracking URI (http/https) is probed once, before any training starts.
If it does not answer, the stage stops with a message that says how to fix it,
or, when the stage's params allow it (``mlflow_fallback_local: true``), logs to
the repository-local store instead and says so.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


class TrackingUnreachableError(RuntimeError):
    """The configured MLflow tracking server did not answer."""


def _probe(uri: str, timeout: float) -> str | None:
    """None if ``uri``'s /health answers, else the reason it did not."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:  # noqa: S310
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


def ensure_reachable(*, fallback_local: bool, root: str | Path = ".", timeout: float = 5.0) -> str:
    """Check ``MLFLOW_TRACKING_URI``; return the URI runs will log to (possibly the local fallback)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return uri or "local"
    reason = _probe(uri, timeout)
    if reason is None:
        return uri
    local = f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"
    if fallback_local:
        print(f"WARNING: MLflow server {uri} is unreachable ({reason}); logging to {local} instead",
              file=sys.stderr)
        os.environ["MLFLOW_TRACKING_URI"] = local
        return local
    raise TrackingUnreachableError(
        f"MLflow tracking server {uri} is unreachable ({reason}). Start it, unset MLFLOW_TRACKING_URI to log "
        "to the local store, or set mlflow_fallback_local: true in this stage's params."
    )
