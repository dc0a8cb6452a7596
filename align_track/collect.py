"""Read results that an app writes to files (``tracker.collect``) into its run.

align-system, for one, writes ``scores.json`` and ``timing.json`` into the job's
output dir instead of calling a logging API.
"""
from __future__ import annotations

import glob
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from align_track.flatten import flatten, unflatten
from align_track.values import REFUSED, to_float

if TYPE_CHECKING:
    from align_track.tracker import Run

logger = logging.getLogger(__name__)

#: Strings up to this length become params; longer ones stay in the artifact only.
SHORT_STRING = 250


def collect(run: "Run", output_dir: str, patterns: List[str]) -> None:
    """Read each file matching ``patterns`` (relative to ``output_dir``) into ``run``.

    A JSON object: numbers become metrics, short strings and booleans params, all
    flattened with dots. A JSON list of records: each numeric field's last value is
    a metric; when the records carry ``step``, every record is logged at its step.
    Each file is also stored as an artifact, and read once even when several
    patterns match it. A missing or malformed file gives one warning naming it.
    """
    seen = set()
    for pattern in patterns:
        found = glob.glob(os.path.join(output_dir, pattern), recursive=True)
        paths = sorted(p for p in found if os.path.isfile(p))
        if not paths:
            logger.warning("tracker.collect: no file matches %r in %s",
                           pattern, output_dir)
            continue
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            try:
                _collect_file(run, path, os.path.relpath(path, output_dir))
            except Exception as exc:  # a file must never fail the job or leave it open
                logger.warning("tracker.collect: could not read %s (%s: %s); skipped",
                               path, type(exc).__name__, exc)


def _collect_file(run: "Run", path: str, name: str) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError, RecursionError) as exc:
        logger.warning("tracker.collect: cannot read %s as JSON (%s); stored as an "
                       "artifact only", path, exc)
        run.log_artifact(path, name=name)
        return
    prefix = os.path.splitext(name)[0].replace(os.sep, "/")
    if isinstance(data, dict):
        metrics, params = _split(flatten(data))
        _log_final(run, {f"{prefix}.{k}": v for k, v in metrics.items()})
        if params:
            run.log_params({prefix: unflatten(params)})
    elif isinstance(data, list):
        _collect_records(run, prefix, [r for r in data if isinstance(r, dict)])
    else:
        logger.warning("tracker.collect: %s holds a %s, not an object or a list of "
                       "records; stored as an artifact only", path, type(data).__name__)
    run.log_artifact(path, name=name)


def _collect_records(run: "Run", prefix: str, records: List[Dict[str, Any]]) -> None:
    if records and all(_is_step(r.get("step")) for r in records):
        for record in records:
            values = {k: v for k, v in record.items() if k != "step"}
            metrics, _ = _split(flatten(values))
            run.log({f"{prefix}.{k}": v for k, v in metrics.items()},
                    step=record["step"])
        return
    last: Dict[str, float] = {}
    for record in records:
        metrics, _ = _split(flatten(record))
        last.update(metrics)
    _log_final(run, {f"{prefix}.{k}": v for k, v in last.items()})


def _is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _log_final(run: "Run", metrics: Dict[str, float]) -> None:
    if metrics:
        run.log(metrics, step=0)


def _split(flat: Dict[str, Any]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    metrics, params = {}, {}
    for key, value in flat.items():
        if isinstance(value, bool) or value is None:
            params[key] = value
        elif isinstance(value, (int, float)):
            number = to_float(value)
            if number is not REFUSED:
                metrics[key] = number
        elif isinstance(value, str) and len(value) <= SHORT_STRING:
            params[key] = value
    return metrics, params
