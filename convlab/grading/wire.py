"""Plain data between the sandbox and the trusted grader: values and the event lines.

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

The lines those values travel in (the worker's events, a check's verdict, the probe's
answers) are defined once, below, for both sides: :class:`KernelStarted`,
:class:`CellEvent`, :class:`Finished`, :class:`Outcome`, :class:`Probe`; writers send
``event.line()``, the grader reads with :func:`parse_event` / :func:`parse_lines`.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any, TypeVar

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



# ----------------------------------------------------------------- the event lines
# What crosses the worker's pipe, one JSON object a line (docs/design.md, "Grading"):
# the worker's own events (:mod:`.worker`), and what the kernel appended to
# $CONVLAB_OUTCOMES during a cell, passed on as it was written: each check's own verdict
# (:func:`convlab.exercises.core.record_outcome`) and the probe's answers
# (:mod:`.probe`).  The writers build these classes and send ``event.line()``; the
# grader (:mod:`.run`, :mod:`.answers`) reads every line with :func:`parse_event`, which
# trusts nothing: the kernel runs the student's code and may write any line, so a
# malformed one is None (ignored) and never raises.

CELL_KINDS = ("start", "end", "timeout", "died")
OUTCOME_RESULTS = ("correct", "incorrect", "not attempted")
PROBE_STATUSES = ("answered", "not attempted", "raised")


@dataclass(frozen=True)
class KernelStarted:
    """The worker's first line: the kernel's pid (without a sandbox the grader kills its
    process group at the end)."""

    pid: int

    def line(self) -> dict[str, Any]:
        return {"event": "kernel", "pid": self.pid}


@dataclass(frozen=True)
class CellEvent:
    """A code cell started, ended (with its first error, if it raised), ran out of time
    or killed the kernel (``kind``, one of :data:`CELL_KINDS`)."""

    cell: int
    kind: str
    error: tuple[str, str] | None = None  # "end": (ename, evalue) of its first error

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"cell": self.cell, "event": self.kind}
        if self.kind == "end":
            line["error"] = None if self.error is None else list(self.error)
        return line


@dataclass(frozen=True)
class Finished:
    """Every cell ran (the worker's last line)."""

    def line(self) -> dict[str, Any]:
        return {"event": "finished"}


@dataclass(frozen=True)
class Outcome:
    """A check's own verdict, written from inside the student's process: it may lower a
    grade or lend its message, never raise one (:func:`convlab.grading.run.decide`)."""

    exercise: str
    result: str  # one of OUTCOME_RESULTS
    message: str

    def line(self) -> dict[str, Any]:
        return {"exercise": self.exercise, "result": self.result, "message": self.message}


@dataclass(frozen=True)
class Probe:
    """The probe's answers to this run's cases of ``exercise`` (tagged values, each
    decoded by the grader with :func:`decode`)."""

    exercise: str
    status: str  # one of PROBE_STATUSES ("" when a line named none)
    answers: list[Any] | None  # None: the line's answers were not a list (malformed)
    error: tuple[str, str] | None = None  # "raised": (type, message)

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"probe": self.exercise, "status": self.status,
                                "answers": self.answers}
        if self.error is not None:
            line["error"] = list(self.error)
        return line


Event = KernelStarted | CellEvent | Finished | Outcome | Probe


def _pair(value: Any, strict: bool) -> tuple[str, str] | None:
    """Two strings from a two-item list (``strict``: only if both already are)."""
    if type(value) is not list or len(value) != 2:
        return None
    if strict and not all(type(v) is str for v in value):
        return None
    return str(value[0]), str(value[1])


def parse_event(data: Any) -> Event | None:
    """The event an untrusted JSON object describes, or None when it is none of them
    (a submission may write anything: nothing here raises).  A line with ``"cell"`` and
    ``"event"`` is the worker's cell event, or nothing; a check's verdict needs a known
    result; a probe line's answers that are not a list come back as ``answers=None``."""
    if type(data) is not dict:
        return None
    if "cell" in data and "event" in data:
        cell, kind = data["cell"], data["event"]
        if type(cell) is not int or type(kind) is not str or kind not in CELL_KINDS:
            return None
        return CellEvent(cell, kind, _pair(data.get("error"), False) if kind == "end"
                         else None)
    event = data.get("event")
    if event == "finished":
        return Finished()
    if event == "kernel":
        return KernelStarted(data["pid"]) if type(data.get("pid")) is int else None
    if type(data.get("exercise")) is str and type(data.get("result")) is str \
            and data["result"] in OUTCOME_RESULTS:
        return Outcome(data["exercise"], data["result"], str(data.get("message", "")))
    if type(data.get("probe")) is str:
        status = data.get("status")
        answers = data.get("answers")
        return Probe(data["probe"], status if type(status) is str else "",
                     answers if type(answers) is list else None,
                     _pair(data.get("error"), True))
    return None


E = TypeVar("E")


def as_event(data: Any, kind: type[E]) -> E | None:
    """``data`` if it is a ``kind`` already, else what :func:`parse_event` makes of it
    when that is a ``kind``, else None (the grader's functions take either)."""
    event = data if isinstance(data, kind) else parse_event(data)
    return event if isinstance(event, kind) else None


def parse_lines(lines: list[bytes]) -> list[Event]:
    """The events among the pipe's lines; anything else (not JSON, nested too deep to
    read, not an event) is dropped."""
    events = []
    for raw in lines:
        try:
            data = json.loads(raw.decode("utf-8", "replace"))
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." a million deep
            continue
        event = parse_event(data)
        if event is not None:
            events.append(event)
    return events
