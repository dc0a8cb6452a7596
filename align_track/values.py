"""Which values ``log()`` accepts, and how they become floats.

Accepted: int, float, bool (0/1), Decimal, Fraction, and one-element scalars of
numpy, PyTorch or JAX, found by duck typing so that no array library is imported.
Refused: None, strings, bytes, containers and arrays of more than one element.
"""
from __future__ import annotations

import decimal
import fractions
import json
import numbers
from typing import Any, Mapping, Optional

REFUSED = object()


def to_float(value: Any) -> Any:
    """``float(value)`` for an accepted metric value, else :data:`REFUSED`."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float, decimal.Decimal, fractions.Fraction)):
        try:
            return float(value)
        except (OverflowError, ValueError):  # beyond float's range; a signaling NaN
            return REFUSED
    if value is None or isinstance(value, (str, bytes, bytearray, Mapping, list, tuple)):
        return REFUSED
    size = _size(value)
    if size is not None and size != 1:
        return REFUSED
    if _masked(value):
        return REFUSED
    item = getattr(value, "item", None)
    if callable(item):
        try:
            plain = item()  # numpy/torch/jax scalar -> Python number (copies off a GPU)
        except Exception:
            return REFUSED
        if type(plain) is not type(value):
            return to_float(plain)
        # numpy's longdouble gives back its own type: converted below
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return REFUSED
    return REFUSED


def _masked(value: Any) -> bool:
    """True for a masked numpy value (``np.ma.masked``), which has no number."""
    mask = getattr(value, "mask", None)
    if mask is None or mask is False:
        return False
    try:
        return bool(mask.any()) if hasattr(mask, "any") else bool(mask)
    except Exception:
        return False


def _size(value: Any) -> Optional[int]:
    numel = getattr(value, "numel", None)
    if callable(numel):
        try:
            return int(numel())
        except Exception:
            return None
    size = getattr(value, "size", None)
    if isinstance(size, int):
        return size
    return None


def to_step(step: Any) -> Any:
    """An int step, or :data:`REFUSED`. Integral floats are taken."""
    if isinstance(step, bool):
        return REFUSED
    if isinstance(step, int):
        return int(step)
    if isinstance(step, float):
        return int(step) if step.is_integer() else REFUSED
    item = getattr(step, "item", None)
    if callable(item) and _size(step) in (None, 1):
        try:
            return to_step(item())
        except Exception:
            return REFUSED
    return REFUSED


def context_key(context: Optional[Mapping[str, Any]]) -> str:
    """Canonical JSON text of a metric context; "" for none."""
    if not context:
        return ""
    if not isinstance(context, Mapping):
        raise TypeError(
            f"context must be a mapping such as {{'subset': 'val'}}, "
            f"got {type(context).__name__}"
        )
    # keys turned into text first, as JSON writes them (1 -> "1", True -> "true"),
    # so keys of mixed types still sort
    return json.dumps({_key_text(k): v for k, v in context.items()}, sort_keys=True,
                      default=str, ensure_ascii=False)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return str(key)
