"""One thread pool: after a convlab kernel, no other library's threads spin on the cores.

OpenBLAS's worker threads, once woken by a multi-threaded GEMM, keep spinning ~0.1 s
(docs/design.md, "Concurrency"; convlab/threads.py, "One pool at a time"), on the cores
the next layer's kernel needs.  With NumPy imported before convlab (as in a notebook)
``_blas_threads.py`` cannot shorten that, so im2col must not wake them at all.  The test
looks at the thread states in /proc: in a fresh process that imports NumPy and torch
first, a NumPy matrix product leaves threads runnable (spinning) 20-60 ms later (the
control: the probe sees spinning), an im2col convolution does not; nor do the backward
kernels whose work is GEMMs (im2col's grad_input and grad_weight, polyphase's grad_weight,
also with Numba on one thread, where it once let the BLAS use its own threads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
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
""")

CHILD = PROBE + textwrap.dedent("""
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
    seen = _probe(CHILD)
    # the control: a multi-threaded NumPy GEMM leaves OpenBLAS's threads spinning
    assert sum(n > 0 for n in seen["matmul"]) >= 6, seen
    # convlab's GEMMs ran on Numba's threads with a single-threaded BLAS: nothing spins
    # (half the samples: a margin for a busy machine, where Numba's own threads may still
    # spin, or wait runnable for a core, a while; without the fix: all ten)
    for kind in ("im2col", "im2col_1x1"):
        assert sum(n > 0 for n in seen[kind]) <= 5, (kind, seen)


BACKWARD_CHILD = PROBE + textwrap.dedent("""
    import numba
    from convlab.backward import conv2d_input, conv2d_weight

    x = rng.random((2, 16, 40, 36), dtype=np.float32)  # the GEMMs: well over OpenBLAS's
    w = rng.random((32, 16, 3, 3), dtype=np.float32)   # one-thread size (M*N*K > 2**18)
    go = rng.random((2, 32, 40, 36), dtype=np.float32)
    x1 = rng.random((2, 64, 40, 36), dtype=np.float32)  # 1x1 stride 2: polyphase's GEMMs
    go1 = rng.random((2, 64, 20, 18), dtype=np.float32)

    def one_thread(call):  # Numba on one thread: one polyphase worker
        def run():
            numba.set_num_threads(1)
            try:
                call()
            finally:
                numba.set_num_threads(2)
        return run

    print(json.dumps({
        "matmul": after(lambda: a @ a),
        "im2col_grad_input": after(
            lambda: conv2d_input(x.shape, w, go, padding=1, algo="im2col")),
        "im2col_grad_weight": after(
            lambda: conv2d_weight(x, w.shape, go, padding=1, algo="im2col")),
        "polyphase_grad_weight_1": after(one_thread(
            lambda: conv2d_weight(x1, (64, 64, 1, 1), go1, stride=2, algo="polyphase"))),
    }))
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenBLAS starts no threads")
def test_backward_gemms_leave_no_thread_spinning_with_numpy_imported_first():
    seen = _probe(BACKWARD_CHILD)
    assert sum(n > 0 for n in seen["matmul"]) >= 6, seen  # the control, as above
    # the same margin as above; with np.matmul on OpenBLAS's threads: all ten busy
    for kind in ("im2col_grad_input", "im2col_grad_weight", "polyphase_grad_weight_1"):
        assert sum(n > 0 for n in seen[kind]) <= 5, (kind, seen)


def _probe(child: str) -> dict[str, list[int]]:
    """Run ``child`` in a fresh process (NumPy and torch imported first, 2 threads for
    Numba and OpenBLAS, OpenBLAS's spin timeout left at its default): what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env["NUMBA_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "2"
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
