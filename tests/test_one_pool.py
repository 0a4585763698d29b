"""One thread pool: after a convlab kernel, no other library's threads spin on the cores.

OpenBLAS's worker threads, once woken by a multi-threaded GEMM, keep spinning ~0.1 s
(docs/design.md, "Concurrency"; convlab/threads.py, "One pool at a time"), on the cores
the next layer's kernel needs.  With NumPy imported before convlab (as in a notebook)
``_blas_threads.py`` cannot shorten that, so im2col must not wake them at all.  The test
looks at the thread states in /proc: in a fresh process that imports NumPy and torch
first, a NumPy matrix product leaves threads runnable (spinning) 20-60 ms later (the
control: the probe sees spinning), an im2col convolution does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import json, os, threading, time
    import numpy as np, torch  # NumPy (and torch) first, as a notebook does
    import convlab

    def runnable_threads():
        me = threading.get_native_id()
        count = 0
        for tid in os.listdir("/proc/self/task"):
            if int(tid) == me:
                continue
            try:
                with open(f"/proc/self/task/{tid}/stat") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except OSError:  # the thread ended
                continue
            count += state == "R"
        return count

    def after(call):
        call(); call()
        time.sleep(0.02)  # Numba's OpenMP threads spin a few ms; OpenBLAS's ~0.1 s
        seen = []
        for _ in range(10):
            seen.append(runnable_threads())
            time.sleep(0.004)
        time.sleep(0.6)  # whatever spins goes to sleep before the next probe
        return seen

    rng = np.random.default_rng(0)
    a = rng.random((1500, 1500), dtype=np.float32)
    x = rng.random((2, 16, 40, 36), dtype=np.float32)  # im2col's lowered GEMM path
    w = rng.random((32, 16, 3, 3), dtype=np.float32)
    x1 = rng.random((2, 16, 20, 24), dtype=np.float32)  # its 1x1 path (no lowering)
    w1 = rng.random((32, 16, 1, 1), dtype=np.float32)
    print(json.dumps({
        "matmul": after(lambda: a @ a),
        "im2col": after(lambda: convlab.conv2d(x, w, padding=1, algo="im2col")),
        "im2col_1x1": after(lambda: convlab.conv2d(x1, w1, algo="im2col")),
    }))
""")


@pytest.mark.alone  # the threads it counts as runnable must not wait for another test's
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenBLAS starts no threads")
def test_im2col_leaves_no_thread_spinning_with_numpy_imported_first():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env["NUMBA_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "2"
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # the control: a multi-threaded NumPy GEMM leaves OpenBLAS's threads spinning
    assert sum(n > 0 for n in seen["matmul"]) >= 6, seen
    # convlab's GEMMs ran on Numba's threads with a single-threaded BLAS: nothing spins
    # (half the samples: a margin for a busy machine, where Numba's own threads may still
    # spin, or wait runnable for a core, a while; without the fix: all ten)
    for kind in ("im2col", "im2col_1x1"):
        assert sum(n > 0 for n in seen[kind]) <= 5, (kind, seen)
