"""The web page of `experiments ui`, driven in a real headless Chromium.

Needs Debian's chromium (/usr/bin/chromium) and Playwright for Python (its own
browsers are never downloaded). Without them the browser tests skip, except under
CI, where they fail. Set ALIGN_TRACK_SCREENSHOTS=docs/screenshots to refresh the
README's screenshots.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from align_track import reader, store
from tests.conftest import ROOT, run_app, write_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

APP = '''
import struct, zlib
from pathlib import Path

import hydra
from omegaconf import DictConfig

import align_track


def png(path, size=48):
    rows = b"".join(b"\\x00" + b"".join(bytes([x * 5 % 256, y * 5 % 256, 160])
                                       for x in range(size)) for y in range(size))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    Path(path).write_bytes(b"\\x89PNG\\r\\n\\x1a\\n"
                           + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    for epoch in range(cfg.epochs):
        align_track.log({"loss": cfg.lr * 10 / (epoch + 1), "acc": epoch / cfg.epochs},
                        step=epoch)
    Path("notes.txt").write_text(f"lr was {cfg.lr}\\n")
    png("sample.png")
    align_track.log_artifact("notes.txt")
    align_track.log_artifact("sample.png")
    align_track.set_tags(model=cfg.model.name)
    return cfg.lr


if __name__ == "__main__":
    main()
'''
CONFIG = """\
lr: 0.1
epochs: 5
model:
  name: mlp
  layers: [64, 32]
  dropout: 0.1
"""


def _browser_missing() -> str:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if not os.path.exists(CHROMIUM):
        return f"no {CHROMIUM} (apt-get install chromium)"
    return ""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with a 3-job sweep and a single run (Hydra apps with +tracker=sqlite),
    and one run still open (status running)."""
    folder = tmp_path_factory.mktemp("ui")
    path = folder / "exp.db"
    app = write_app(folder / "app", APP, CONFIG)
    run_app(app, "-m", "lr=0.1,0.03,0.01", "+tracker=sqlite", f"tracker.db={path}")
    run_app(app, "+tracker=sqlite", f"tracker.db={path}", "lr=0.5", "model.name=cnn")
    from align_track import track_run

    live = track_run("live-exp", {"lr": 0.2}, name="still-going", db=str(path),
                     flush_interval=0.1)
    live.log({"loss": 1.0}, step=0)
    live.flush()
    yield path
    live.end()


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[str]:
    """The page's server on 127.0.0.1 and a free port, stopped at the end."""
    from align_track.ui.server import make_server

    srv = make_server(str(db), host="127.0.0.1", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.url
    srv.shutdown()
    srv.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860},
                                  accept_downloads=True, bypass_csp=True)
    pg = context.new_page()
    errors: List[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # The page must need nothing but its own server: any other request fails the test.
    outside: List[str] = []

    def guard(route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    pg.route("**/*", guard)
    yield pg
    context.close()
    assert not errors, f"script errors on the page: {errors}"
    assert not outside, f"the page asked for outside resources: {outside}"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as res:
        return json.load(res)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            return res.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _shot(pg: Any, name: str, tmp_path: Path) -> None:
    pg.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    target = os.environ.get("ALIGN_TRACK_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(target) / f"{name}.png")


def _runs(db: Path) -> Dict[str, Dict[str, Any]]:
    conn = store.connect_readonly(str(db))
    try:
        return {r["name"]: r for r in reader.list_runs(conn)}
    finally:
        conn.close()


def _wait_ready(pg: Any, path: str) -> None:
    pg.wait_for_selector(f'body[data-ready="{path}"]' if not path.endswith("*")
                         else f'body[data-ready^="{path[:-1]}"]')


# -- the API, without a browser ---------------------------------------------------------

def test_api_pages_sorts_and_filters(server: str, db: Path) -> None:
    first = _get(server + "api/runs?limit=2&sort=started_at&desc=0")
    assert first["total"] == 5
    assert [r["name"] for r in first["runs"]] == ["app lr=0.1", "app lr=0.03"]
    rest = _get(server + "api/runs?limit=2&offset=2&sort=started_at&desc=0")
    assert [r["name"] for r in rest["runs"]] == ["app lr=0.01", "app lr=0.5 model.name=cnn"]
    by_loss = _get(server + "api/runs?sort=metrics.loss&desc=0&experiment=app")
    assert [r["metrics"]["loss"] for r in by_loss["runs"]] == pytest.approx(
        [0.02, 0.06, 0.2, 1.0])
    small = _get(server + "api/runs?where=" + urllib.request.quote("params.lr<0.05"))
    assert sorted(r["params"]["lr"] for r in small["runs"]) == [0.01, 0.03]
    assert _get(server + "api/runs?q=cnn")["total"] == 1
    assert _get(server + "api/runs?status=running")["runs"][0]["name"] == "still-going"
    groups = _get(server + "api/groups")
    assert {e["name"]: e["runs"] for e in groups["experiments"]} == {"app": 4, "live-exp": 1}
    assert groups["sweeps"][0]["runs"] == 3
    assert _status(server + "api/runs?where=" + urllib.request.quote("nonsense")) == 400
    assert _status(server + "api/run?id=0000000000") == 404


def test_server_serves_only_the_store_and_its_files(server: str, db: Path) -> None:
    run = _runs(db)["app lr=0.1"]
    host = server.split("//")[1].rstrip("/")
    secret = (ROOT / "align_track" / "ui" / "server.py").read_bytes()
    attempts = [
        "/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/server.py",
        "/static/..%5cserver.py", "/../../../../etc/passwd", "/static//etc/passwd",
        "/static/%2fetc%2fpasswd", "/api/../static/app.js/../../server.py",
        f"/api/artifact?run={run['id']}&name=../../exp.db",
        f"/api/artifact?run={run['id']}&name=..%2F..%2Fexp.db",
        f"/api/artifact?run={run['id']}&name=/etc/passwd",
        f"/api/artifact?run={run['id']}&name=objects/../../exp.db",
        "/api/artifact?run=../../etc&name=passwd",
    ]
    for path in attempts:
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request("GET", path)  # sent as written: no client-side normalising
        res = conn.getresponse()
        body = res.read()
        conn.close()
        assert res.status in (400, 404), (path, res.status)
        assert b"root:" not in body and body != secret and b"SQLite format" not in body
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("POST", "/api/runs", body=b"{}")
    assert conn.getresponse().status == 405
    conn.close()
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", "/api/runs", headers={"Host": "evil.example:80"})
    assert conn.getresponse().status == 400  # DNS rebinding is refused
    conn.close()


def test_artifact_download_is_the_stored_bytes(server: str, db: Path) -> None:
    run = _runs(db)["app lr=0.03"]
    url = server + "api/artifact?" + urllib.parse.urlencode(
        {"run": run["id"], "name": "notes.txt"})
    with urllib.request.urlopen(url, timeout=10) as res:
        assert res.read() == b"lr was 0.03\n"
        assert "attachment" in res.headers["Content-Disposition"]


# -- the page, in Chromium ----------------------------------------------------------------

def test_list_filter_open_run_and_chart(page: Any, server: str, db: Path,
                                        tmp_path: Path) -> None:
    page.goto(server)
    _wait_ready(page, "/")
    assert page.locator("#runs tr.run").count() == 5
    groups = page.locator("#runs tr.group").all_inner_texts()
    assert any("sweep" in g for g in groups) and any("live-exp" in g for g in groups)
    assert page.locator("tr.run.running .status.running").count() == 1
    assert page.locator("#live").is_visible()  # a running run: the list refreshes
    _shot(page, "list", tmp_path)

    page.fill("#where", "params.lr<0.05")
    page.press("#where", "Enter")
    _wait_ready(page, "/")
    page.wait_for_function("document.querySelectorAll('#runs tr.run').length === 2")
    names = sorted(page.locator("#runs tr.run td:nth-child(3)").all_inner_texts())
    assert names == ["app lr=0.01", "app lr=0.03"]

    page.fill("#where", "")
    page.fill("#q", "cnn")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelectorAll('#runs tr.run').length === 1")
    page.click("#runs tr.run a.runlink")
    _wait_ready(page, "/run/*")
    assert page.inner_text("#run-name") == "app lr=0.5 model.name=cnn"

    run = _runs(db)["app lr=0.5 model.name=cnn"]
    conn = store.connect_readonly(str(db))
    logged = reader.metric_history(conn, store.find_run_key(conn, run["id"])["key"])
    conn.close()
    path = page.locator('#charts svg[data-metric="loss"] path.series')
    assert path.count() == 1
    drawn_y = [float(v) for v in path.get_attribute("data-y").split(",")]
    drawn_x = [int(v) for v in path.get_attribute("data-x").split(",")]
    assert drawn_y == [p["value"] for p in logged["loss"]] == pytest.approx(
        [5.0, 2.5, 5 / 3, 1.25, 1.0])
    assert drawn_x == [0, 1, 2, 3, 4]
    assert len(path.get_attribute("d").split("L")) == 5  # five points joined

    config = page.inner_text("#config")
    assert "layers" in config and "cnn" in config and "dropout" in config
    assert "model.name=cnn" in page.inner_text("#overrides")
    assert "model=cnn" in page.inner_text("#tags")
    assert page.locator("pre.artifact-text[data-name='notes.txt']").inner_text() == \
        "lr was 0.5\n"
    page.wait_for_function("document.querySelector('img.artifact').naturalWidth === 48")
    _shot(page, "run", tmp_path)

    with page.expect_download() as info:
        page.click("a.download[data-name='sample.png']")
    saved = info.value.path()
    conn = sqlite3.connect(str(db))
    sha = conn.execute("SELECT sha256 FROM artifacts a JOIN runs r ON r.key = a.run_key "
                       "WHERE r.id = ? AND a.name = 'sample.png'", (run["id"],)).fetchone()[0]
    conn.close()
    stored = store.artifact_dir(str(db)) / "objects" / sha[:2] / sha
    assert Path(saved).read_bytes() == stored.read_bytes()
    assert Path(saved).read_bytes().startswith(b"\x89PNG")


def test_compare_two_runs(page: Any, server: str, db: Path, tmp_path: Path) -> None:
    page.goto(server + "#/?experiment=app&sort=started_at&desc=0")
    _wait_ready(page, "/")
    runs = _runs(db)
    wanted = [runs["app lr=0.1"]["id"], runs["app lr=0.01"]["id"]]
    for run_id in wanted:
        page.check(f"#runs input[data-id='{run_id}']")
    assert page.inner_text("#compare") == "Compare selected (2)"
    page.click("#compare")
    _wait_ready(page, "/compare")

    paths = page.locator('#charts svg[data-metric="loss"] path.series')
    assert paths.count() == 2
    drawn = {paths.nth(i).get_attribute("data-run"):
             [float(v) for v in paths.nth(i).get_attribute("data-y").split(",")]
             for i in range(2)}
    assert drawn[wanted[0]] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert drawn[wanted[1]] == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025, 0.02])
    first = page.locator("#params tbody tr").first
    assert first.get_attribute("data-param") == "lr"  # the differing param comes first
    assert "differs" in first.get_attribute("class")
    dots = page.locator("#scatter circle")
    assert dots.count() == 2
    assert page.input_value("#scatter-param") == "lr"
    assert sorted(float(dots.nth(i).get_attribute("data-x")) for i in range(2)) == [0.01, 0.1]
    _shot(page, "compare", tmp_path)


def test_compare_a_sweep(page: Any, server: str, tmp_path: Path) -> None:
    sweep = _get(server + "api/groups")["sweeps"][0]["id"]
    page.goto(server + f"#/compare?sweep={sweep}")
    _wait_ready(page, "/compare")
    assert page.locator('#charts svg[data-metric="acc"] path.series').count() == 3
    assert page.locator("#scatter circle").count() == 3
    _shot(page, "sweep", tmp_path)


def test_experiments_ui_command(db: Path) -> None:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "align_track.cli", "--db", str(db), "ui", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        assert _get(url + "api/runs")["total"] == 5
        with urllib.request.urlopen(url, timeout=10) as res:
            assert b"/static/app.js" in res.read()
    finally:
        proc.terminate()
        proc.wait(10)


def test_ui_refuses_a_missing_store(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "align_track.cli", "--db", str(tmp_path / "none.db"), "ui",
         "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "no store at" in proc.stderr

