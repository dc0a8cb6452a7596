"""The wheel alone makes the `tracker` group and the callback work in any app."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

APP = '''
import hydra
import align_track

@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    for i in range(3):
        align_track.log({"loss": 1.0 / (i + 1)}, step=i)

if __name__ == "__main__":
    main()
'''


def _registry_env() -> dict:
    # pip talks to the package index, the one host these tests may reach
    return {k: v for k, v in os.environ.items()
            if k not in ("ALIGN_TRACK_NETGUARD", "PYTHONPATH")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, env=_registry_env())
    [built] = dist.glob("align_track-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel installed (dependencies from the index)."""
    env_dir = tmp_path_factory.mktemp("pkg") / "venv"
    venv.create(env_dir, with_pip=True)
    proc = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                           str(wheel)], capture_output=True, text=True, env=_registry_env())
    assert proc.returncode == 0, proc.stderr
    return env_dir


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()

    assert "hydra_plugins/align_track/tracker_options.py" in names
    assert "align_track/ui/static/index.html" in names
    assert "hydra_plugins/__init__.py" not in names  # a namespace package


def test_app_outside_repo_uses_installed_package(installed: Path, tmp_path: Path) -> None:
    app_dir = tmp_path / "someone_elses_project"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    (app_dir / "config.yaml").write_text("lr: 0.1\n")
    python = installed / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(__file__).parent / "netguard")  # guard only, no repo

    run = subprocess.run([str(python), "app.py", "-m", "+tracker=sqlite", "lr=0.1,0.2",
                          "tracker.db=stores/runs.db"], cwd=app_dir, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    listing = subprocess.run([str(installed / "bin" / "experiments"), "--db",
                              "stores/runs.db", "list", "--format", "json"],
                             cwd=app_dir, env=env, capture_output=True, text=True)

    assert listing.returncode == 0, listing.stderr
    runs = json.loads(listing.stdout)
    assert sorted(r["params"]["lr"] for r in runs) == [0.1, 0.2]
    assert all(r["metrics"]["loss"] == pytest.approx(1 / 3) for r in runs)
    where = subprocess.run([str(python), "-c", "import align_track; print(align_track.__file__)"],
                           cwd=app_dir, env=env, capture_output=True, text=True).stdout
    assert str(installed) in where
