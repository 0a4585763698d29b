"""Plain data between the sandbox and the trusted grader: numbers, sequences, arrays.

Grading draws cases on the trusted side, sends them into the sandbox, and gets the
student's answers back (docs/design.md, "Grading"). Neither direction may carry code or
objects with behaviour: a value crosses as a JSON object tagged with its *exact* type,

* ``{"t": "int", "v": 3}`` -- ``type(v) is int`` or an exact NumPy integer type (an
  ``int`` subclass is not an int: its ``!=`` could say anything);
* ``{"t": "float", "v": "0.5"}`` -- the ``repr`` of a float, so inf and nan survive JSON;
* ``{"t": "bool", "v": true}``;
* ``{"t": "seq", "v": [...]}`` -- an exact ``tuple`` or ``list``, at most :data:`DEPTH`
  deep;
* ``{"t": "array", "npy": BASE64}`` -- an exact ``np.ndarray`` of a bool, integer or
  float dtype, as ``np.save`` writes it without pickles;
* ``{"t": "other", "type": NAME}`` -- anything else: the grader says what came back.

:func:`encode` runs on either side; :func:`decode` runs on the trusted side on bytes the
student's process may have written, so it checks every field and loads arrays with
``allow_pickle=False``; anything malformed raises :class:`WireError`.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

DEPTH = 4
MAX_ARRAY_BYTES = 16 << 20
INT_TYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
             np.uint64)
FLOAT_TYPES = (np.float16, np.float32, np.float64)


class WireError(ValueError):
    """Data that is not what the protocol allows."""


def encode(value: Any, depth: int = 0) -> dict[str, Any]:
    """``value`` as tagged plain data (never raises for an odd value: it is "other")."""
    kind = type(value)
    if kind is bool or kind is np.bool_:
        return {"t": "bool", "v": bool(value)}
    if kind is int or kind in INT_TYPES:
        return {"t": "int", "v": int(value)}
    if kind is float or kind in FLOAT_TYPES:
        return {"t": "float", "v": repr(float(value))}
    if (kind is tuple or kind is list) and depth < DEPTH:
        return {"t": "seq", "v": [encode(v, depth + 1) for v in value]}
    if kind is np.ndarray and value.dtype.kind in "biuf" and value.nbytes <= MAX_ARRAY_BYTES:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
        return {"t": "array", "npy": base64.b64encode(buf.getvalue()).decode("ascii")}
    name = getattr(kind, "__name__", "?")
    return {"t": "other", "type": name if isinstance(name, str) else "?"}


def decode(data: Any, depth: int = 0) -> Any:
    """The value ``data`` describes: an ``int``, ``float``, ``bool``, ``list`` or
    ``np.ndarray``, or :class:`Other`. Raises :class:`WireError` for anything else."""
    if type(data) is not dict or type(data.get("t")) is not str:
        raise WireError("not a tagged value")
    tag = data["t"]
    if tag == "int" and type(data.get("v")) is int:
        return data["v"]
    if tag == "bool" and type(data.get("v")) is bool:
        return data["v"]
    if tag == "float" and type(data.get("v")) is str and len(data["v"]) < 40:
        try:
            return float(data["v"])
        except ValueError:
            raise WireError("not a float") from None
    if tag == "seq" and type(data.get("v")) is list and depth < DEPTH:
        return [decode(v, depth + 1) for v in data["v"]]
    if tag == "array" and type(data.get("npy")) is str \
            and len(data["npy"]) <= MAX_ARRAY_BYTES * 4 // 3 + 8:
        try:
            raw = base64.b64decode(data["npy"].encode("ascii"), validate=True)
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError, UnicodeEncodeError) as err:
            raise WireError(f"not an array: {err}") from None
        if type(arr) is not np.ndarray or arr.dtype.kind not in "biuf":
            raise WireError("not a numeric array")
        return arr
    if tag == "other" and type(data.get("type")) is str:
        return Other(data["type"][:80])
    raise WireError(f"unknown or malformed value (tag {tag[:20]!r})")


class Other:
    """A value of a type the protocol does not carry (only its type's name came back)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<a {self.type_name}>"

