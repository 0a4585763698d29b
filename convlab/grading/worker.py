"""The child side of ``convlab grade``: run one notebook in a fresh kernel, with limits.

Started by :func:`convlab.grading.run.run_task` as ``python -m convlab.grading.worker
JOB`` inside the notebook's sandbox (:mod:`.sandbox`; with ``--no-sandbox``, in a new
session of its own). JOB holds ``job.json`` (the notebook, the limits, the check cells,
where the submission's copy is) and ``cases.json`` (this run's cases, plain data).

Before the kernel starts, this process lowers its own resource limits, which the kernel
(and anything the kernel starts) inherits: the data segment (``RLIMIT_DATA``: heap and
private memory maps, so an allocation past it raises MemoryError), the size of any file
written (``RLIMIT_FSIZE``), CPU seconds (``RLIMIT_CPU``) and core dumps (none); the
sandbox adds the address space and the process count. The wall-clock limit is enforced
cell by cell by nbclient here, and for the whole run by the parent, which kills the
sandbox (or, without one, this process group and the kernel's).

Every check cell is first reset to the teacher's call, ``ex.NAME.check(VAR)`` (a
submission's edits to it do not count), followed by the probe
(:func:`convlab.grading.probe.answer`), which sends VAR's answers to this run's cases;
cells run with ``allow_errors``, so an error costs only the exercises it breaks. Events
go up the pipe to the grader (this process's stdout, moved to a descriptor the kernel
does not inherit), one JSON line each (the schema: :mod:`.wire`): ``KernelStarted``
(``{"event": "kernel", "pid": N}``) first, then per cell ``CellEvent(i, "start")``, what
the kernel appended to ``$CONVLAB_OUTCOMES`` during the cell (the check's ``Outcome`` and
the probe's ``Probe``, passed on as written), ``CellEvent(i, "end", error)`` or
``CellEvent(i, "timeout" | "died")``; ``Finished`` last. All of it is untrusted: the
grader decides (:mod:`.run`).
Outputs other than errors are dropped as they arrive: a cell printing megabytes costs
no memory here.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from .wire import CellEvent, Event, Finished, KernelStarted

KERNEL_NAME = "convlab-grade"
FORWARD_BYTES = 16 << 20
# the kernel's threads: two Numba threads are enough for prange to race, and a fixed
# count keeps the data segment (thread stacks count) the same on every machine
THREAD_ENV = {"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def _limit(which: int, value: int) -> None:
    """Soft and hard limit both ``value`` (or lower, if the hard limit already is): the
    kernel may not raise it again."""
    _, hard = resource.getrlimit(which)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))


def apply_limits(job: dict[str, Any]) -> None:
    """Lower this process's limits; the kernel started next inherits them."""
    _limit(resource.RLIMIT_DATA, int(job["memory_bytes"]))
    _limit(resource.RLIMIT_FSIZE, int(job["file_bytes"]))
    _limit(resource.RLIMIT_CPU, int(job["cpu_s"]))
    _limit(resource.RLIMIT_CORE, 0)


def _kernelspec(scratch: Path) -> None:
    """This interpreter as a kernel, first on JUPYTER_PATH (the kernel must import the
    convlab that grades, whatever kernels the machine has)."""
    spec = scratch / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "convlab grade", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(scratch)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p])


class Channel:
    """The pipe to the grader: this process's stdout, moved to a descriptor no child
    inherits (fd 1 then points at stderr, so what the kernel prints goes to the log)."""

    def __init__(self, outcomes: Path) -> None:
        self.out = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
        self.outcomes = outcomes
        self.offset = 0

    def emit(self, event: Event) -> None:
        self.out.write(json.dumps(event.line()) + "\n")
        self.out.flush()

    def forward(self) -> None:
        """Pass on what the kernel appended to the outcome file since the last call (its
        checks' verdicts and the probe's answers), at most FORWARD_BYTES a cell."""
        try:
            with open(self.outcomes, "rb") as f:
                f.seek(self.offset)
                data = f.read(FORWARD_BYTES)
                self.offset = f.tell()
        except OSError:
            return
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.out.write(line.strip() + "\n")
        self.out.flush()


def _first_error(cell: Any) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return str(out.get("ename", "")), str(out.get("evalue", ""))[:2000]
    return None


def main(jobdir: Path) -> int:
    import nbformat
    from jupyter_client.provisioning import LocalProvisioner
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    job = json.loads((jobdir / "job.json").read_text())
    work = Path(job["work"])
    scratch = Path(job["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    outcomes = scratch / "outcomes.jsonl"
    outcomes.touch()
    channel = Channel(outcomes)
    emit = channel.emit
    nb = nbformat.read(work / job["notebook"], as_version=4)
    for index, source in job["checks"].items():
        nb.cells[int(index)].source = source
        nb.cells[int(index)].outputs = []

    class ErrorsOnly(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            if msg["msg_type"] != "error":
                return None  # dropped: only errors are read, and printing may be huge
            return super().output(outs, msg, display_id, cell_index)

    _kernelspec(scratch)
    os.environ.update(THREAD_ENV)
    os.environ["CONVLAB_OUTCOMES"] = str(outcomes)
    os.environ["CONVLAB_CASES"] = str(jobdir / "cases.json")
    os.environ["MPLBACKEND"] = "Agg"
    apply_limits(job)
    client = ErrorsOnly(nb, kernel_name=KERNEL_NAME, allow_errors=True,
                        shutdown_kernel="immediate", timeout=int(job["timeout_s"]),
                        resources={"metadata": {"path": str(work / Path(job["notebook"]).parent)}})
    with client.setup_kernel():
        # our kernelspec starts a local process, whose pid the parent needs to kill it
        provisioner = None if client.km is None else client.km.provisioner
        if not isinstance(provisioner, LocalProvisioner) or provisioner.pid is None:
            raise RuntimeError(f"the notebook's kernel is not a local process ({provisioner!r})")
        emit(KernelStarted(provisioner.pid))  # on the pipe, never a file
        deadline = time.monotonic() + float(job["timeout_s"])
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                emit(CellEvent(index, "timeout"))
                break
            client.timeout = max(1, int(remaining))
            emit(CellEvent(index, "start"))
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                channel.forward()
                emit(CellEvent(index, "timeout"))
                break
            except DeadKernelError:
                channel.forward()
                emit(CellEvent(index, "died"))
                break
            channel.forward()
            emit(CellEvent(index, "end", _first_error(cell)))
        else:
            emit(Finished())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
