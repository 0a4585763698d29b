"""The tracer with the CUDA simulator switched on, as notebook 07 and the exercise checks
run it: kernels are the simulator's FakeCUDAKernel, device functions too, and arrays
may be the simulator's device arrays.

Not collected by the main test run (the name does not start with ``test_``): numba
reads NUMBA_ENABLE_CUDASIM once, when it is first imported.  tests/test_cuda_trace.py
runs this file in a subprocess with the simulator on::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_trace_cases.py
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

import convlab
from convlab import ConvSpec
from convlab.cuda_trace import expected_reads, trace, trace_conv
from convlab.functional import prepare
from convlab.kernels import cuda as ck

if not ck.is_simulator():
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported",
                allow_module_level=True)


@cuda.jit(device=True)
def twice(a):
    return 2 * a


@cuda.jit
def reverse_in_blocks(src, dst, sync):
    s = cuda.shared.array(4, np.float64)
    t = cuda.threadIdx.x
    s[t] = twice(src[cuda.grid(1)])
    if sync:
        cuda.syncthreads()
    dst[cuda.grid(1)] = s[3 - t]


def test_simulator_kernels_device_functions_and_device_arrays():
    src = cuda.to_device(np.arange(8.0))
    dst = cuda.device_array(8)
    t = trace(reverse_in_blocks, 2, 4, src, dst, True)
    assert t.ok, t.summary()
    np.testing.assert_array_equal(dst.copy_to_host(), 2 * np.arange(8.0).reshape(2, 4)[:, ::-1]
                                  .ravel())
    assert [f.kind for f in trace(reverse_in_blocks, 2, 4, src, dst, False).findings] == [
        "race", "uninitialised"]
    # the simulator's own launch still works afterwards (the globals were put back)
    out = np.zeros(8)
    reverse_in_blocks[2, 4](np.arange(8.0), out, True)
    np.testing.assert_array_equal(out, 2 * np.arange(8.0).reshape(2, 4)[:, ::-1].ravel())


@pytest.mark.parametrize("algo", ["cuda_naive", "cuda_tiled"])
def test_trace_of_convlab_kernels_matches_conv2d(algo):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 4, 6, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    args = dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2)
    xa, wa, ba, spec = prepare(x, w, None, **args)
    t, out = trace_conv(algo, xa, wa, ba, spec)
    assert t.ok, t.summary()
    np.testing.assert_array_equal(out, convlab.conv2d(x, w, algo=algo, **args))
    want = expected_reads(spec, algo)
    assert (t.counts()["x"]["reads"], t.counts()["w"]["reads"]) == (want["input"],
                                                                   want["weight"])


def test_the_simulator_itself_misses_what_the_tracer_finds():
    """Why the tracer exists: the bare simulator runs a divergent barrier silently."""

    @cuda.jit
    def early_exit(src, dst):
        s = cuda.shared.array(8, np.float64)
        i = cuda.grid(1)
        if i >= dst.size:
            return
        s[cuda.threadIdx.x] = src[i]
        cuda.syncthreads()
        dst[i] = s[cuda.threadIdx.x]

    out = np.zeros(12)
    early_exit[2, 8](np.arange(16.0), out)  # no error, no hang
    np.testing.assert_array_equal(out, np.arange(12.0))
    found = trace(early_exit, 2, 8, np.arange(16.0), np.zeros(12)).findings
    assert [f.kind for f in found] == ["divergent-barrier"]


def test_spec_helpers_agree_with_the_kernel_module():
    spec = ConvSpec.from_shapes((1, 3, 5, 7), (4, 3, 3, 3), padding=1)
    assert ck.default_config(spec) == ck.SIM_CONFIG
