"""What a benchmark run measured, as plain data: records, saved as JSON and CSV.

A :class:`BenchResult` holds the machine (:func:`convlab.system.describe`), the
calibration (:mod:`convlab.bench.ceilings`), the settings and one :class:`Record`
per (layer, contender).  Plots (:mod:`convlab.plots`) are drawn from saved results,
never by timing again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

STATUSES = ("ok", "wrong", "n/a", "skip", "error")


@dataclass
class Record:
    """One (layer, kernel) outcome.  ``status`` is one of STATUSES; times in seconds;
    ``vs_torch`` / ``vs_naive`` are speed ratios (their time / this time: > 1 is faster)."""

    layer: str
    layer_desc: str
    kernel: str
    device: str
    dtype: str
    batch: int
    status: str
    reason: str = ""
    flops: int = 0
    bytes: int = 0
    intensity: float = 0.0
    gate_batch: int | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    tolerance: float | None = None
    first_use: bool = False
    first_call_s: float | None = None
    compile_s: float | None = None
    number: int | None = None
    repeats: int | None = None
    median_s: float | None = None
    q1_s: float | None = None
    q3_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None
    peak_fraction: float | None = None
    bandwidth_gbs: float | None = None
    vs_torch: float | None = None
    vs_naive: float | None = None  # on a GPU: vs cuda_naive
    # GPU runs: the copies in (x, weight, bias) and out, timed apart from median_s
    # (CUDA events around the launches alone); vs_cudnn vs torch_fp32 (TF32 off)
    h2d_s: float | None = None
    d2h_s: float | None = None
    vs_cudnn: float | None = None
    note: str = ""  # e.g. cuda_tiled's tile config, the rival's TF32 setting
    # convlab bench --split: each stage's share of median_s (a kernel's `stages` hook)
    stages_s: dict[str, float] | None = None
    noisy: bool = False  # the samples scattered too much even after re-sampling
    dropped_rounds: int = 0  # rounds taken again because other processes were busy
    # what was timed (convlab.bench.ops): "forward", "backward" (grad_input + grad_weight +
    # grad_bias) or "transpose" (conv_transpose2d); the kernel's name carries it too, as a
    # label only: code reads this field (bench.run.relate), never the name's suffix
    op: str = "forward"

    def gflops_at(self, seconds: float | None) -> float | None:
        return None if not seconds else self.flops / seconds / 1e9


RECORD_FIELDS = [f.name for f in fields(Record)]


@dataclass
class BenchResult:
    """Everything one run measured: plain data, saved and loaded as JSON."""

    machine: dict[str, Any]
    calibration: dict[str, Any]
    settings: dict[str, Any]
    records: list[Record]

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "calibration": self.calibration,
                "settings": self.settings, "records": [asdict(r) for r in self.records]}

    @property
    def partial(self) -> str | None:
        """Why this result is incomplete (e.g. interrupted), or None."""
        return self.settings.get("partial")

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write JSON and CSV (same name, the other suffix); returns both paths.

        Each file is written to a temporary name beside it and renamed into place, so
        an interrupted save never leaves a truncated file (and re-saving after every
        layer keeps the last complete one)."""
        json_path, csv_path = output_paths(path)
        _atomic_write(json_path, json.dumps(self.to_dict(), indent=1, default=_jsonable) + "\n")
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        for rec in self.records:
            row = asdict(rec)
            row["stages_s"] = json.dumps(rec.stages_s) if rec.stages_s else None
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        _atomic_write(csv_path, buf.getvalue())
        return json_path, csv_path

    def layers(self) -> list[str]:
        return list(dict.fromkeys(r.layer for r in self.records))

    def kernels(self) -> list[str]:
        return list(dict.fromkeys(r.kernel for r in self.records))

    def get(self, layer: str, kernel: str) -> Record | None:
        for r in self.records:
            if r.layer == layer and r.kernel == kernel:
                return r
        return None

    def machine_line(self) -> str:
        m, s = self.machine, self.settings
        torch_v = m.get("versions", {}).get("torch")
        gpu = f"; {m.get('cuda', '?')}" if s.get("device") == "cuda" else ""
        return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, numba "
                f"{m.get('versions', {}).get('numba', '?')} ({m.get('numba_threads', '?')} "
                f"threads)" + (f", torch {torch_v}" if torch_v else "") + gpu
                + f"; {s.get('dtype', '?')}, {s.get('date', '')[:10]}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def load(path: str | os.PathLike) -> BenchResult:
    """Read a result saved by :meth:`BenchResult.save` (the JSON file; records saved by
    older versions load too: unknown fields are dropped, missing ones take defaults)."""
    data = json.loads(Path(path).read_text())
    known = set(RECORD_FIELDS)
    records = [Record(**{k: v for k, v in r.items() if k in known}) for r in data["records"]]
    return BenchResult(data["machine"], data["calibration"], data["settings"], records)


def output_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The JSON and CSV paths :meth:`BenchResult.save` writes for ``path``."""
    path = Path(path)
    return (path if path.suffix != ".csv" else path.with_suffix(".json")), \
        path.with_suffix(".csv")


def check_writable(path: str | os.PathLike) -> None:
    """Raise ValueError, saying why, unless :meth:`BenchResult.save` can write ``path``
    (and its CSV twin): checked before a run, so no result is lost at the end."""
    for target in output_paths(path):
        if target.is_dir():
            raise UsageError(f"cannot write {str(target)!r}: it is a directory")
        folder = target.resolve().parent
        if not folder.is_dir():
            raise UsageError(f"cannot write {str(target)!r}: its folder {str(folder)!r} "
                             "does not exist")
        try:  # the only sure test: create a file there (then remove it)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise UsageError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
        if target.exists() and not os.access(target, os.W_OK):
            raise UsageError(f"cannot write {str(target)!r}: the file is read-only")


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
