"""align-system's real composed configs survive capture (shared/fixtures/alignsys)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import experiments_json, run_app

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "alignsys"
APP = Path(__file__).parent / "apps" / "alignsys" / "app.py"
CONFIGS = sorted(FIXTURES.glob("*.yaml"))


def test_fixtures_are_present() -> None:
    assert len(CONFIGS) == 3, f"expected the align-system fixtures in {FIXTURES}"


@pytest.mark.parametrize("fixture", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_alignsys_config_is_captured(fixture: Path, tmp_path: Path) -> None:
    shutil.copy(APP, tmp_path / "app.py")
    shutil.copy(fixture, tmp_path / "config.yaml")

    run_app(tmp_path / "app.py", "+tracker=sqlite", env={"HOME": str(tmp_path)})

    db = str(tmp_path / "experiments.db")
    [summary] = experiments_json("--db", db, "list")
    run = experiments_json("--db", db, "show", summary["id"])
    original = OmegaConf.load(fixture)
    assert run["status"] == "finished"
    assert OmegaConf.create(run["config_yaml"]) == original
    assert set(run["config"]) == set(original.keys())
    refs = {k: v for k, v in run["params"].items()
            if isinstance(v, str) and v.startswith("${ref:")}
    expected_refs = [line for line in fixture.read_text().splitlines()
                     if "${ref:" in line and not line.strip().startswith("- ")]
    assert len(refs) == len(expected_refs)
    target = OmegaConf.select(original, "adm.instance._target_")
    assert run["params"]["adm.instance._target_"] == target


def test_node_interpolations_resolve_to_nested_values(tmp_path: Path) -> None:
    fixture = FIXTURES / "06_phase2_june_aligned_20icl.yaml"
    shutil.copy(APP, tmp_path / "app.py")
    shutil.copy(fixture, tmp_path / "config.yaml")

    run_app(tmp_path / "app.py", "+tracker=sqlite")

    db = str(tmp_path / "experiments.db")
    run = experiments_json("--db", db, "show", experiments_json("--db", db, "list")[0]["id"])
    original = OmegaConf.load(fixture)
    medical = run["config"]["adm"]["attribute_definitions"]["medical"]
    assert medical["name"] == original.adm.mu.name
    steps = run["params"]["adm.instance.steps"]
    assert isinstance(steps, list) and steps[0].startswith("${ref:")
