"""Nested config <-> flat dotted params, without losing or merging keys.

A key segment is written as is when it is a plain name (no ``.``, ``[``, ``]`` or
``"``, not empty); any other segment is written as a JSON string, so
``{"a.b": 1}`` becomes ``'"a.b"'`` and ``{"a": {"b": 1}}`` becomes ``a.b``. Lists are
one param each (their JSON text), and an empty mapping is one param whose value is
``{}``, so :func:`unflatten` gives the nested config back.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Tuple

_PLAIN = re.compile(r'^[^.\[\]"]+$')

EMPTY_DICT = "{}"


def encode_segment(key: Any) -> str:
    key = str(key)
    if _PLAIN.match(key):
        return key
    return json.dumps(key, ensure_ascii=False)


def join_key(segments: List[Any]) -> str:
    return ".".join(encode_segment(s) for s in segments)


def split_key(flat_key: str) -> List[str]:
    """Inverse of :func:`join_key`."""
    segments: List[str] = []
    i = 0
    n = len(flat_key)
    while i <= n:
        if i < n and flat_key[i] == '"':
            decoder = json.JSONDecoder()
            value, end = decoder.raw_decode(flat_key, i)
            segments.append(value)
            i = end
        else:
            end = flat_key.find(".", i)
            end = n if end == -1 else end
            segments.append(flat_key[i:end])
            i = end
        if i < n and flat_key[i] != ".":
            raise ValueError(f"malformed param key {flat_key!r} at {i}")
        i += 1
    return segments


def flatten(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Flatten nested mappings to ``{dotted_key: leaf}``.

    Leaves are scalars, lists (kept whole) or ``{}`` for an empty mapping.
    """
    out: Dict[str, Any] = {}
    # (dotted prefix, mapping): each key is encoded once, not once per leaf below it
    stack: List[Tuple[str, Mapping[str, Any]]] = [("", config)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            segment = encode_segment(key)
            path = f"{prefix}.{segment}" if prefix else segment
            if isinstance(value, Mapping):
                if value:
                    stack.append((path, value))
                else:
                    out[path] = {}
            else:
                out[path] = value
    return out


def unflatten(params: Mapping[str, Any]) -> Dict[str, Any]:
    root: Dict[str, Any] = {}
    for flat_key, value in params.items():
        segments = split_key(flat_key)
        node = root
        for seg in segments[:-1]:
            node = node.setdefault(seg, {})
        node[segments[-1]] = value
    return root
