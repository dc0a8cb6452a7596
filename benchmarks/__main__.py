"""``python -m benchmarks [--quick] [--only CASE ...] [--out DIR]``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.suite import QUICK, Sizes, Suite

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N: seconds, not minutes")
    parser.add_argument("--only", nargs="+", metavar="CASE",
                        help="run only these cases (imports, log_cost, peers, ingest, "
                        "memory, concurrency, cli_scale, mlflow_scale, callback, "
                        "config_size, other_backends)")
    parser.add_argument("--out", type=Path,
                        help=f"where the results go (default: {RESULTS} for a full run "
                        f"of every case; {RESULTS / 'partial'} with --quick or --only, "
                        "so that a partial run never replaces the full run's files)")
    parser.add_argument("--max-runs", type=int,
                        help="largest store for the CLI figures (default 100000)")
    parser.add_argument("--no-server", action="store_true",
                        help="skip the rows that need an mlflow server process")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / "partial" if args.quick or args.only else RESULTS
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        stream=sys.stderr)
    sizes = QUICK if args.quick else Sizes()
    if args.max_runs:
        sizes = dataclasses.replace(sizes, store_sizes=tuple(
            n for n in sizes.store_sizes if n < args.max_runs) + (args.max_runs,))
    tmp = Path(tempfile.mkdtemp(prefix="align-track-bench-"))
    t0 = time.perf_counter()
    try:
        suite = Suite(sizes, tmp, only=args.only, server=not args.no_server)
        results = suite.run()
        guard = tmp / "netguard.log"
        if guard.exists() and guard.read_text().strip():
            suite.notes.append("network access outside 127.0.0.0/8 was refused: "
                               + guard.read_text()[:300])
        doc = report.write(results, dataclasses.asdict(sizes), suite.notes, args.out,
                           args.quick, time.perf_counter() - t0)
    finally:
        if args.keep:
            logging.info("scratch folder kept: %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.write(report.markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
