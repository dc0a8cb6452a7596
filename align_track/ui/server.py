"""A small read-only web server over the SQLite store (standard library only).

Routes (GET and HEAD only):

- ``/`` and ``/static/<file>``: the page, its script and style, from this package.
- ``/api/runs``: one page of runs; query ``offset``, ``limit``, ``sort``, ``desc``,
  ``group``, ``experiment``, ``status``, ``sweep``, ``q`` (name or id), ``where``.
- ``/api/groups``: experiments, sweeps and status counts.
- ``/api/run?id=ID``: everything recorded for one run, with metric stats.
- ``/api/metrics?id=ID``: every point of each metric of a run (thinned past
  ``max_points`` per metric).
- ``/api/compare?ids=A,B`` or ``?sweep=ID``: runs side by side.
- ``/api/artifact?run=ID&name=NAME``: an artifact's bytes, looked up by run and name
  in the store and read only from the store's artifact folder.
"""
from __future__ import annotations

import json
import logging
import math
import mimetypes
import re
import sqlite3
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from align_track import reader, store
from align_track.ui import queries

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
MAX_COMPARE = 200
MAX_POINTS = 5000
_SHA = re.compile(r"^[0-9a-f]{64}$")
_INLINE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"}


class NotFound(Exception):
    """Answered with 404 and the message."""


class BadRequest(Exception):
    """Answered with 400 and the message."""


class StoreServer(ThreadingHTTPServer):
    """The HTTP server; ``db`` is the store it reads."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], db: str):
        self.db = str(db)
        store.connect_readonly(self.db).close()  # fail now on a missing store
        self.objects = (store.artifact_dir(self.db) / "objects").resolve()
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(db: str, host: str = "127.0.0.1", port: int = 0) -> StoreServer:
    """A server bound to ``host:port`` (port 0: a free one); call serve_forever()."""
    return StoreServer((host, port), db)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class Handler(BaseHTTPRequestHandler):
    """Answers the routes in the module docstring; nothing writes to the store."""

    server: StoreServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("%s " + format, self.address_string(), *args)

    # -- dispatch --------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only server\n",
                   "text/plain; charset=utf-8", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _dispatch(self, head: bool) -> None:
        self._head = head
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            self._check_host()
            if path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            elif path in ("/", "/index.html"):
                self._static("index.html")
            elif path.startswith("/static/"):
                self._static(path[len("/static/"):])
            elif path == "/api/artifact":
                self._artifact(query)
            elif path.startswith("/api/"):
                route = path[len("/api/"):]
                handler = getattr(self, "_api_" + route, None) if route.isidentifier() else None
                if handler is None:
                    raise NotFound(f"no API route {path}")
                self._json(handler(query))
            else:
                raise NotFound(f"nothing at {path}")
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except (BadRequest, queries.FilterError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except KeyError as exc:
            self._error(HTTPStatus.NOT_FOUND, exc.args[0] if exc.args else "not found")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # one bad request must not stop the server
            logger.exception("error answering %s", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _check_host(self) -> None:
        # A page on another site must not read the store through DNS rebinding:
        # on a loopback address only loopback host names are answered.
        if self.server.server_address[0] not in ("127.0.0.1", "::1"):
            return
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1", ""):
            raise BadRequest(f"unexpected Host header {host!r}")

    # -- answers ---------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(body)

    def _json(self, data: Any) -> None:
        body = json.dumps(_json_safe(data), default=str, ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
        self._send(HTTPStatus.OK, body, "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode("utf-8")
        try:
            self._send(status, body, "application/json; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _static(self, name: str) -> None:
        # Only the files listed in STATIC_FILES exist: no path from the URL ever
        # reaches the file system.
        if name not in STATIC_FILES:
            raise NotFound(f"no static file {name!r}")
        body = (STATIC / name).read_bytes()
        self._send(HTTPStatus.OK, body, STATIC_FILES[name],
                   extra={"Content-Security-Policy": "default-src 'self'; "
                          "img-src 'self' data:; style-src 'self' 'unsafe-inline'"})

    def _connect(self) -> sqlite3.Connection:
        return store.connect_readonly(self.server.db)

    # -- API -------------------------------------------------------------------------

    def _api_runs(self, q: Dict[str, str]) -> Dict[str, Any]:
        conn = self._connect()
        try:
            return queries.page_runs(
                conn, offset=_int(q, "offset", 0), limit=_int(q, "limit", 50),
                sort=q.get("sort") or "started_at", descending=q.get("desc", "1") != "0",
                grouped=q.get("group", "0") == "1", experiment=q.get("experiment"),
                status=q.get("status"),
                sweep=reader.resolve_sweep(conn, q["sweep"]) if q.get("sweep") else None,
                text=q.get("q"), where=q.get("where"))
        finally:
            conn.close()

    def _api_groups(self, q: Dict[str, str]) -> Dict[str, Any]:
        conn = self._connect()
        try:
            return queries.groups(conn)
        finally:
            conn.close()

    def _api_run(self, q: Dict[str, str]) -> Dict[str, Any]:
        conn = self._connect()
        try:
            run = reader.get_run(conn, _required(q, "id"), history=False)
            run["metric_stats"] = reader.metric_stats(
                conn, store.find_run_key(conn, run["id"])["key"])
            return run
        finally:
            conn.close()

    def _api_metrics(self, q: Dict[str, str]) -> Dict[str, Any]:
        limit = _int(q, "max_points", MAX_POINTS)
        conn = self._connect()
        try:
            row = store.find_run_key(conn, _required(q, "id"))
            history = reader.metric_history(conn, row["key"])
        finally:
            conn.close()
        return {
            "id": row["id"], "started_at": row["started_at"],
            "metrics": {name: _thin(points, limit) for name, points in history.items()},
        }

    def _api_compare(self, q: Dict[str, str]) -> Dict[str, Any]:
        conn = self._connect()
        try:
            if q.get("sweep"):
                ids = [r["id"] for r in reader.list_runs(conn, sweep=q["sweep"],
                                                         limit=MAX_COMPARE)]
                ids.reverse()  # job order reads better oldest first
            else:
                ids = [i for i in _required(q, "ids").split(",") if i][:MAX_COMPARE]
            runs = [reader.get_run(conn, i, history=False) for i in ids]
            for run in runs:
                run["metric_stats"] = reader.metric_stats(
                    conn, store.find_run_key(conn, run["id"])["key"])
        finally:
            conn.close()
        varying = reader.varying_keys(runs)
        same = sorted({k for r in runs for k in r["params"]} - set(varying))
        return {
            "runs": [{k: r[k] for k in ("id", "name", "experiment", "status", "started_at",
                                        "duration", "sweep_id", "job_num", "params",
                                        "metric_stats", "tags")} for r in runs],
            "varying": varying, "same": same,
            "metric_names": sorted({m for r in runs for m in r["metric_stats"]}),
        }

    def _artifact(self, q: Dict[str, str]) -> None:
        conn = self._connect()
        try:
            row = store.find_run_key(conn, _required(q, "run"))
            found = conn.execute("SELECT sha256, size FROM artifacts WHERE run_key = ? AND "
                                 "name = ?", (row["key"], _required(q, "name"))).fetchone()
        finally:
            conn.close()
        if found is None:
            raise NotFound(f"run {row['id']} has no artifact {q['name']!r}")
        path = self._object_path(found["sha256"])
        name = q["name"]
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        inline = q.get("inline") == "1"
        if inline and not (ctype in _INLINE_TYPES or ctype.startswith("text/")):
            ctype = "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/json",):
            ctype = "text/plain; charset=utf-8" if inline else ctype
        filename = name.rsplit("/", 1)[-1].replace('"', "")
        disposition = "inline" if inline else "attachment"
        self._send(HTTPStatus.OK, path.read_bytes(), ctype, extra={
            "Content-Disposition": f'{disposition}; filename="{filename}"',
            # An artifact is never a page that runs scripts with this origin.
            "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; "
                                       "style-src 'unsafe-inline'",
        })

    def _object_path(self, sha: str) -> Path:
        if not _SHA.match(sha or ""):
            raise NotFound("artifact record is damaged")
        path = (self.server.objects / sha[:2] / sha).resolve()
        if path.parent.parent != self.server.objects or not path.is_file():
            raise NotFound("artifact bytes are missing from the store's artifact folder")
        return path


def _thin(points: List[Dict[str, Any]], limit: int) -> List[Dict[str, Any]]:
    """At most about ``limit`` points, evenly spaced, always keeping the last."""
    if limit <= 0 or len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def _int(q: Dict[str, str], key: str, default: int) -> int:
    try:
        return int(q.get(key, default))
    except ValueError:
        raise BadRequest(f"{key} must be an integer") from None


def _required(q: Dict[str, str], key: str) -> str:
    value = q.get(key)
    if not value:
        raise BadRequest(f"missing query parameter {key!r}")
    return value
