"""Run a student's numba.cuda kernel on the CUDA simulator, traced, in a fresh process
(or, with ``"device": "gpu"`` in the job, plainly on a real GPU).

Started by :mod:`convlab.exercises.cuda` as ``python _cudasim_runner.py WORKDIR`` with
``NUMBA_ENABLE_CUDASIM=1`` in the environment: the student's notebook imported Numba
long ago, and a kernel that loops forever must not hang the notebook (the parent
process kills this one after a timeout).  Each launch runs through
:func:`convlab.cuda_trace.trace`, which records every memory access, so the checker
gets the kernel's traffic and its findings (out-of-bounds, races, uninitialised
shared memory, divergent barriers) with the output.

WORKDIR holds ``kernel.py`` (the source), ``job.json`` (kernel name and one launch
per case) and ``inputs.npz`` (x0, w0, x1, w1, ...).  Written back: ``outputs.npz``
(out0, out1, ...) and ``result.json`` ({"ok": true, "traces": [...]} or the first
error).

On a machine with an NVIDIA GPU the checker runs the same cases a second time, on the GPU
(``"device": "gpu"``, the simulator off): the tracer proves what the simulator can see,
and the GPU run shows that the kernel compiles for real hardware and gives the same
numbers there, thousands of threads truly at once.  The result then says which GPU ran
it (``"gpu"``), or why none could (``"unavailable"``).
"""

import json
import linecache
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE_NAME = "<your kernel>"


def _summary(t) -> dict:
    """What the checker needs from a trace, as JSON."""
    counts = {name: {k: c[k] for k in ("space", "reads", "writes", "atomics",
                                       "distinct_read")}
              for name, c in t.counts().items()}
    reads = t.per_thread("global", "read")
    return {"counts": counts, "findings": [f.as_dict() for f in t.findings],
            "threads": int(reads.size), "max_thread_reads": int(reads.max()),
            "barriers": int(t.barriers_per_thread().max())}


def main(workdir: Path) -> None:
    job = json.loads((workdir / "job.json").read_text())
    on_gpu = job.get("device") == "gpu"
    if on_gpu == (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"):
        raise SystemExit("NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported "
                         "for a simulator run, and unset for a GPU run")
    # run as a script, this folder is first on sys.path, where its modules (cuda.py,
    # core.py, ...) would shadow others; the convlab that started us comes first instead
    sys.path[:] = [str(HERE.parent.parent)] + [p for p in sys.path
                                               if p and Path(p).resolve() != HERE]
    import numba
    import numpy as np
    from numba import cuda

    from convlab.cuda_trace import trace

    if on_gpu and not cuda.is_available():
        (workdir / "result.json").write_text(json.dumps(
            {"ok": False, "stage": "start", "unavailable": "numba.cuda finds no usable GPU "
             "here", "case": None, "type": "Unavailable", "message": "",
             "not_implemented": False}))
        return
    inputs = np.load(workdir / "inputs.npz")

    def fail(stage: str, err: BaseException, case: int | None = None) -> None:
        tail = traceback.format_exception_only(type(err), err)[-1].strip()
        result = {"ok": False, "stage": stage, "case": case, "type": type(err).__name__,
                  "message": tail, "not_implemented": "NotImplementedError" in tail}
        (workdir / "result.json").write_text(json.dumps(result))

    namespace: dict[str, Any] = {"cuda": cuda, "np": np, "numpy": np, "math": math, "numba": numba,
                 "__name__": "student_kernel"}
    try:
        source = (workdir / "kernel.py").read_text()
        # so tracebacks and the tracer's shared-array names can read the source
        linecache.cache[SOURCE_NAME] = (len(source), None, source.splitlines(True),
                                        SOURCE_NAME)
        exec(compile(source, SOURCE_NAME, "exec"), namespace)
        kernel = namespace[job["name"]]
    except BaseException as err:  # noqa: BLE001 - everything goes back to the checker
        fail("define", err)
        return
    outputs, traces = {}, []
    for n, case in enumerate(job["cases"]):
        out = np.full(case["out_shape"], np.nan)
        blocks, threads = tuple(case["blocks"]), tuple(case["threads"])
        try:
            if on_gpu:  # a plain launch: the device's own threads, nothing traced
                x_d, w_d = cuda.to_device(inputs[f"x{n}"]), cuda.to_device(inputs[f"w{n}"])
                out_d = cuda.to_device(out)
                kernel[blocks, threads](x_d, w_d, out_d)
                cuda.synchronize()
                out = out_d.copy_to_host()
            else:
                t = trace(kernel, blocks, threads, inputs[f"x{n}"], inputs[f"w{n}"], out,
                          timeout_s=job.get("timeout_s", 120))
                traces.append(_summary(t))
        except BaseException as err:  # noqa: BLE001
            fail("run", err, n)
            return
        outputs[f"out{n}"] = out
    # plain float arrays: nothing to pickle (naming the flag also keeps a type checker from
    # matching the arrays against it)
    np.savez(workdir / "outputs.npz", allow_pickle=False, **outputs)
    done: dict = {"ok": True, "traces": traces}
    if on_gpu:
        gpu = cuda.get_current_device().name
        done["gpu"] = gpu.decode() if isinstance(gpu, bytes) else str(gpu)
    (workdir / "result.json").write_text(json.dumps(done))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
