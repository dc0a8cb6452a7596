"""Artifacts: odd names, folders, links, changing and very large files."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import align_track
from align_track import reader, store


def _stored(db: Path, run_id: str) -> dict:
    got = reader.get_run(store.connect_readonly(str(db)), run_id)
    return {a["name"]: a for a in got["artifacts"]}


def _object(db: Path, sha: str) -> Path:
    return store.artifact_dir(str(db)) / "objects" / sha[:2] / sha


def test_names_never_leave_the_run(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    src = tmp_path / "résumé final.txt"
    src.write_text("bytes")
    with align_track.track_run("a", db=str(db)) as run:
        run.log_artifact(src)
        run.log_artifact(src, name="../../../etc/passwd")
        run.log_artifact(src, name="/abs/path.txt")
        missing = run.log_artifact(tmp_path / "nope.txt")

    names = set(_stored(db, run.id))
    assert names == {"résumé final.txt", "etc/passwd", "abs/path.txt"}
    assert missing == []
    assert not (tmp_path.parent / "etc").exists()
    assert {p.name for p in store.artifact_dir(str(db)).rglob("*") if p.is_file()} == {
        hashlib.sha256(b"bytes").hexdigest()}


def test_folder_with_link_outside(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (folder / "leak.txt").symlink_to(secret)
    with align_track.track_run("a", db=str(db)) as run:
        run.log_artifact(folder)

    stored = _stored(db, run.id)
    assert set(stored) == {"out/a.txt", "out/sub/b.txt"}
    assert _object(db, stored["out/sub/b.txt"]["sha256"]).read_text() == "b"


def test_a_file_gone_from_a_batch_costs_only_itself(tmp_path: Path, caplog) -> None:
    # the job-end batch (Hydra's files and the log) is stored in one transaction; a
    # file that vanished in between must not cost the others
    db = tmp_path / "e.db"
    for name in ("a.yaml", "c.log"):
        (tmp_path / name).write_text(name)
    with align_track.track_run("a", db=str(db)) as run:
        got = run.store_files([(str(tmp_path / "a.yaml"), ".hydra/a.yaml"),
                               (str(tmp_path / "gone.yaml"), ".hydra/gone.yaml"),
                               (str(tmp_path / "c.log"), "c.log")])

    assert [g["name"] for g in got] == [".hydra/a.yaml", "c.log"]
    stored = _stored(db, run.id)
    assert set(stored) == {".hydra/a.yaml", "c.log"}
    assert _object(db, stored["c.log"]["sha256"]).read_text() == "c.log"
    assert any("gone.yaml" in r.getMessage() for r in caplog.records)


def test_objects_folder_cleaned_while_the_process_runs(tmp_path: Path) -> None:
    # a clean-up script empties the store's objects folder between two jobs of a sweep
    import shutil

    db = tmp_path / "e.db"
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights")
    with align_track.track_run("a", db=str(db)) as first:
        first.log_artifact(src)
    for shard in (store.artifact_dir(str(db)) / "objects").glob("??"):
        shutil.rmtree(shard)
    with align_track.track_run("a", db=str(db)) as second:
        got = second.log_artifact(src)

    assert [g["name"] for g in got] == ["model.bin"]
    sha = _stored(db, second.id)["model.bin"]["sha256"]
    assert _object(db, sha).read_bytes() == b"weights"


def test_same_bytes_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    for name in ("x.bin", "y.bin"):
        (tmp_path / name).write_bytes(b"\\x00" * 1000)
    with align_track.track_run("a", db=str(db)) as run:
        run.log_artifact(tmp_path / "x.bin")
        run.log_artifact(tmp_path / "y.bin")

    assert len(_stored(db, run.id)) == 2
    assert len([p for p in (store.artifact_dir(str(db)) / "objects").rglob("*") if p.is_file()]) == 1


def test_file_changing_while_copied_is_stored_consistently(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    src = tmp_path / "growing.log"
    src.write_bytes(b"x" * (8 << 20))
    stop = threading.Event()

    def grow() -> None:
        with open(src, "ab") as fh:
            while not stop.is_set():
                fh.write(b"y" * 4096)
                fh.flush()

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        with align_track.track_run("a", db=str(db)) as run:
            [info] = run.log_artifact(src)
    finally:
        stop.set()
        writer.join()

    data = _object(db, info["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == info["sha256"]
    assert len(data) == info["size"] >= 8 << 20


BIG = """
import resource, sys, align_track
with align_track.track_run("big", db=sys.argv[1]) as run:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    [info] = run.log_artifact(sys.argv[2])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(info["size"], (after - before) // 1024)
"""


def test_two_gigabyte_file_is_streamed(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:  # sparse: no disk used until read back
        fh.truncate(2 * 1024**3)
    db = tmp_path / "e.db"

    out = subprocess.run([sys.executable, "-c", BIG, str(db), str(big)], capture_output=True,
                         text=True, check=True, env=dict(os.environ))

    size, grown_mb = map(int, out.stdout.split())
    assert size == 2 * 1024**3
    assert grown_mb < 64  # memory stays flat: copied in 1 MiB chunks
