"""Shared fixtures: a network guard on every test, telemetry off, helpers to run apps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
NETGUARD = TESTS / "netguard"

TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "AIM_UI_TELEMETRY_ENABLED": "0",
    "CLEARML_OFFLINE_MODE": "1",
    "HYDRA_FULL_ERROR": "1",
}
os.environ.update(TELEMETRY_OFF)


@pytest.fixture(autouse=True)
def netguard(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Fail the test if it, or a Python subprocess it starts, leaves 127.0.0.0/8."""
    log = tmp_path_factory.mktemp("netguard") / "violations.log"
    monkeypatch.setenv("ALIGN_TRACK_NETGUARD", str(log))
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(NETGUARD), path) if p))
    import socket

    saved = (socket.getaddrinfo, socket.gethostbyname, socket.socket.connect,
             socket.socket.connect_ex)
    sys.path.insert(0, str(NETGUARD))
    import importlib

    import sitecustomize as guard  # noqa: F401 - the guard module of tests/netguard

    if getattr(guard, "__file__", "").startswith(str(NETGUARD)):
        importlib.reload(guard)
    yield log
    (socket.getaddrinfo, socket.gethostbyname, socket.socket.connect,
     socket.socket.connect_ex) = saved
    sys.path.remove(str(NETGUARD))
    if log.exists() and log.read_text().strip():
        pytest.fail("network access outside 127.0.0.0/8:\n" + log.read_text()[:4000])


def run_app(
    app: Path,
    *args: str,
    cwd: Optional[Path] = None,
    env: Optional[Dict[str, str]] = None,
    check: bool = True,
    timeout: float = 180,
) -> subprocess.CompletedProcess:
    """Run a Hydra app in a subprocess, as a user would from a shell."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(app), *args],
        cwd=str(cwd or app.parent), env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"app failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def experiments(*args: str, cwd: Optional[Path] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `experiments` CLI in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "align_track.cli", *args], cwd=str(cwd) if cwd else None,
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"experiments {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def experiments_json(*args: str, cwd: Optional[Path] = None) -> Any:
    return json.loads(experiments(*args, "--format", "json", cwd=cwd).stdout)


def write_app(folder: Path, body: str, config: str, name: str = "app.py") -> Path:
    """Write a Hydra app (a script and its config.yaml) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config)
    app = folder / name
    app.write_text(body)
    return app
