"""Start and stop the tracking servers the tests need, on 127.0.0.1 only."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

SERVER_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "AIM_UI_TELEMETRY_ENABLED": "0",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MLflowServer:
    """`mlflow server` with a SQLite backend store, in its own process group."""

    def __init__(self, root: Path, port: Optional[int] = None):
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 240) -> "MLflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server",
             "--backend-store-uri", f"sqlite:///{self.root / 'm.db'}",
             "--default-artifact-root", str(self.root / "art"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=str(self.root), env={**os.environ, **SERVER_ENV}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow server exited:\n" + self.log_tail())
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("mlflow server did not start:\n" + self.log_tail())

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its workers
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self) -> str:
        return (self.root / "server.log").read_text()[-3000:]
