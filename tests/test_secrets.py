"""No planted secret reaches any file align-track writes."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import experiments_json, run_app

APP = Path(__file__).parent / "apps" / "secrets"
OPENAI = "sk-proj-PLANTEDSECRETOPENAI0123456789abcdef"
GATEWAY = "gw-PLANTED-ENV-VALUE-31337"  # read through oc.env under a harmless key
SECRETS = [OPENAI, "PLANTEDSECRETANTHROPIC", "hunter2-PLANTED-PASSWORD",
           "PLANTEDGITHUBTOKEN", "PLANTED-OVERRIDE-TOKEN", GATEWAY]
ENV = {"OPENAI_API_KEY": OPENAI, "TEAM_GATEWAY_CREDENTIAL_VALUE": GATEWAY}


def _files_written_by_align_track(folder: Path) -> list:
    return [p for p in folder.rglob("*") if p.is_file()
            and (p.name.startswith("experiments") or "experiments-artifacts" in p.parts)]


def test_no_secret_in_store_or_artifacts(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    shutil.copytree(APP, app_dir)

    run_app(app_dir / "app.py", "+tracker=sqlite", "+hf_token=PLANTED-OVERRIDE-TOKEN",
            env=ENV)

    files = _files_written_by_align_track(app_dir)
    assert any(p.suffix == ".db" for p in files) and len(files) > 4
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} leaked into {path}"
    db = str(app_dir / "experiments.db")
    run = experiments_json("--db", db, "show", experiments_json("--db", db, "list")[0]["id"])
    assert run["params"]["llm.api_key"] == "<redacted>"
    assert run["params"]["llm.max_tokens"] == 512
    assert run["params"]["llm.tokenizer"] == "cl100k"
    assert run["params"]["service.auth_token"] == "<redacted>"
    assert run["tags"]["endpoint_token"] == "<redacted>"
    assert "${oc.env:OPENAI_API_KEY}" in run["config_yaml"]
    assert "+hf_token=<redacted>" in run["overrides"]
    assert run["name"] == "app +hf_token=<redacted>"
    assert run["params"]["llm.endpoint_key_source"] == "<redacted>"
    assert run["params"]["llm.home"] == os.environ["HOME"]  # an allowed variable
    assert "app.log" in {a["name"] for a in run["artifacts"]}  # stored, scrubbed


def test_no_secret_in_the_error_or_the_return_value(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    shutil.copytree(APP, app_dir)

    failed = run_app(app_dir / "app.py", "+tracker=sqlite", "+fail=true", env=ENV,
                     check=False)
    run_app(app_dir / "app.py", "+tracker=sqlite", "+give_back=true", env=ENV)

    assert failed.returncode != 0
    for path in _files_written_by_align_track(app_dir):
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} leaked into {path}"
    db = str(app_dir / "experiments.db")
    returned, raised = (experiments_json("--db", db, "show", r["id"])
                        for r in experiments_json("--db", db, "list"))
    assert raised["status"] == "failed"
    assert raised["error"]["message"] == "auth failed with <redacted> at <redacted>"
    assert "RuntimeError: auth failed with <redacted>" in raised["error"]["traceback"]
    assert returned["return_value"] == {"used": "<redacted>", "password": "<redacted>",
                                        "summary": "<redacted>"}


def test_no_secret_in_names_keys_or_contexts(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    shutil.copytree(APP, app_dir)

    run_app(app_dir / "app.py", "+tracker=sqlite", "+names=true", env=ENV)

    for path in _files_written_by_align_track(app_dir):
        assert GATEWAY.encode() not in path.read_bytes(), f"leaked into {path}"
        assert GATEWAY not in str(path)
    db = str(app_dir / "experiments.db")
    run = experiments_json("--db", db, "show", experiments_json("--db", db, "list")[0]["id"])
    assert run["metrics"]["m_<redacted>[via=\"<redacted>\"]"][0]["value"] == 1.0
    assert run["tags"]["tag_<redacted>"] == "v"
    assert run["params"]["p_<redacted>"] == 1
    assert "notes_<redacted>.txt" in {a["name"] for a in run["artifacts"]}


def test_redact_adds_patterns_and_empty_list_turns_it_off(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    shutil.copytree(APP, app_dir)

    run_app(app_dir / "app.py", "+tracker=sqlite", "tracker.redact=['^model$']",
            env=ENV)
    run_app(app_dir / "app.py", "+tracker=sqlite", "tracker.redact=[]",
            env=ENV)

    db = str(app_dir / "experiments.db")
    newest, oldest = experiments_json("--db", db, "list")
    masked = experiments_json("--db", db, "show", oldest["id"])["params"]
    plain = experiments_json("--db", db, "show", newest["id"])["params"]
    assert masked["llm.model"] == "<redacted>" and masked["llm.api_key"] == "<redacted>"
    assert plain["llm.api_key"] == OPENAI and plain["llm.model"] == "gpt-4o"


CREDENTIAL_SHAPES = [
    "sk-ant-" + "a" * 20, "sk-proj-" + "b" * 25, "AKIA" + "A" * 16, "ghp_" + "x" * 32,
    "github_pat_" + "y" * 31, "hf_" + "z" * 31, "xoxb-" + "1" * 12, "AIza" + "q" * 35,
    "glpat-" + "w" * 21, "eyJ" + "a" * 11 + ".eyJ" + "b" * 11 + "." + "c" * 11,
    "-----BEGIN RSA PRIVATE KEY-----", "postgres://user:pw@host/db",
]


def test_credentials_found_in_short_and_long_hydra_files() -> None:
    # .hydra files run to kilobytes (searched pattern by pattern), values to a few
    # characters (one search); a sweep's jobs repeat most lines (remembered clean)
    from align_track.redact import Redactor

    redactor = Redactor.from_setting(None)
    page = "hydra:\n" + "".join(f"  key{i}: value {i} https://hydra.cc\n" for i in range(80))
    assert len(page) > 1000
    assert not redactor.may_mask_yaml(page)
    assert not redactor.may_mask_yaml(page)  # its lines now known clean
    for shape in CREDENTIAL_SHAPES:
        for text in (f"b: {shape}\n", f"{page}  b: {shape}\n", f"b: {shape}\n{page}"):
            assert redactor.may_mask_yaml(text), (shape, len(text))
            assert shape not in redactor.text(text), (shape, len(text))
        assert redactor.secret_value(shape)
    # a secret key on a new line among lines known clean, found every time
    for _ in range(2):
        assert redactor.may_mask_yaml(page + "  api_key: abc\n")
    # a key folded over two lines of a long value
    assert redactor.may_mask_yaml(page + "  note: >\n    -----BEGIN RSA\n    PRIVATE KEY-----\n")


LEAK_APP = '''
import logging
import hydra
log = logging.getLogger(__name__)

@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    log.info("connecting with %s and %s", cfg.db.password, cfg.cache)
    raise RuntimeError(f"login refused for password {cfg.db.password}")

if __name__ == "__main__":
    main()
'''
LEAK_CONFIG = '''
aaa:
  value: interpSECRETvalue42
db:
  password: 98765432
cache: "redis://:RedisPassw0rd1@cache:6379/0"
llm:
  api_key: ${aaa.value}
'''


def test_secrets_in_numbers_interpolations_urls_and_output_dirs(tmp_path: Path) -> None:
    # a numeric password, a secret reached through an interpolation from a harmless
    # key, a URL with a password and no user, and an output dir named by overrides
    from conftest import write_app

    app = write_app(tmp_path / "app", LEAK_APP, LEAK_CONFIG)
    run_app(app, "-m", "+tracker=sqlite", "+svc.api_key=OVERRIDE-SECRET-7777",
            "hydra.sweep.subdir=${hydra.job.override_dirname}", check=False)

    files = _files_written_by_align_track(app.parent)
    assert any(p.suffix == ".db" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in ("98765432", "interpSECRETvalue42", "RedisPassw0rd1",
                       "OVERRIDE-SECRET-7777"):
            assert secret.encode() not in data, f"{secret} leaked into {path}"
    db = str(app.parent / "experiments.db")
    run = experiments_json("--db", db, "show", experiments_json("--db", db, "list")[0]["id"])
    assert run["status"] == "failed"
    assert run["params"]["aaa.value"] == "<redacted>"
    assert run["params"]["db.password"] == "<redacted>"
    assert "<redacted>" in run["output_dir"]
    assert {".hydra/config.yaml", "app.log"} <= {a["name"] for a in run["artifacts"]}
