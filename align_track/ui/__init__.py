"""``experiments ui``: a local, read-only web page over the SQLite store.

The server is :mod:`align_track.ui.server` (standard library only); the page, its
script and its style ship in ``align_track/ui/static`` and load nothing from the
network.
"""
from __future__ import annotations

import argparse
from typing import Any


def add_commands(command: Any) -> None:
    """Declare ``experiments ui`` on the CLI."""
    p = command("ui", cmd_ui, "a local web page to browse, plot and compare runs")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8470,
                   help="port to listen on (default 8470; 0 picks a free one)")


def cmd_ui(args: argparse.Namespace) -> None:
    """Serve a read-only page over the store: the runs (sortable, filterable, grouped
    by experiment and sweep), each run's config, artifacts and metric charts, and
    comparisons of runs. Stop it with Ctrl-C."""
    from align_track import cli
    from align_track.errors import StoreError
    from align_track.ui.server import make_server

    try:
        server = make_server(cli._db(args), host=args.host, port=args.port)
    except StoreError:
        raise
    except OSError as exc:
        raise cli.CLIError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); "
                           f"pick another --port") from None
    print(f"serving {cli._db(args)} at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
