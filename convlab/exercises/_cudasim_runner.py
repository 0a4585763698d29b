"""Run a student's numba.cuda kernel on the CUDA simulator, in a fresh process.

Started by :mod:`convlab.exercises.cuda` as ``python _cudasim_runner.py WORKDIR`` with
``NUMBA_ENABLE_CUDASIM=1`` in the environment: the simulator must be chosen before
Numba is imported, which the student's notebook did long ago.  This file imports
nothing from convlab (so none of its own CUDA code loads here).

WORKDIR holds ``kernel.py`` (the source), ``job.json`` (kernel name and one launch
per case) and ``inputs.npz`` (x0, w0, x1, w1, ...).  Written back: ``outputs.npz``
(out0, out1, ...) and ``result.json`` ({"ok": true} or the first error).
"""

import json
import math
import os
import sys
import traceback
from pathlib import Path


def main(workdir: Path) -> None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise SystemExit("NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported")
    import numba
    import numpy as np
    from numba import cuda

    job = json.loads((workdir / "job.json").read_text())
    inputs = np.load(workdir / "inputs.npz")

    def fail(stage: str, err: BaseException, case: int | None = None) -> None:
        tail = traceback.format_exception_only(type(err), err)[-1].strip()
        result = {"ok": False, "stage": stage, "case": case, "type": type(err).__name__,
                  "message": tail, "not_implemented": "NotImplementedError" in tail}
        (workdir / "result.json").write_text(json.dumps(result))

    namespace = {"cuda": cuda, "np": np, "numpy": np, "math": math, "numba": numba,
                 "__name__": "student_kernel"}
    try:
        source = (workdir / "kernel.py").read_text()
        exec(compile(source, "<your kernel>", "exec"), namespace)
        kernel = namespace[job["name"]]
        if not hasattr(kernel, "__getitem__"):  # a plain function: make it a kernel
            kernel = cuda.jit(kernel)
    except BaseException as err:  # noqa: BLE001 - everything goes back to the checker
        fail("define", err)
        return
    outputs = {}
    for n, case in enumerate(job["cases"]):
        out = np.full(case["out_shape"], np.nan)
        try:
            kernel[tuple(case["blocks"]), tuple(case["threads"])](inputs[f"x{n}"],
                                                                  inputs[f"w{n}"], out)
        except BaseException as err:  # noqa: BLE001
            fail("run", err, n)
            return
        outputs[f"out{n}"] = out
    np.savez(workdir / "outputs.npz", **outputs)
    (workdir / "result.json").write_text(json.dumps({"ok": True}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
