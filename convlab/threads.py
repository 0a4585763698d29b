"""How convlab shares the process's thread pools: what may run at once, and what is serialised.

Two pools of threads can run a convolution here: Numba's (every ``@njit(parallel=True)``
function, i.e. every ``prange``) and the BLAS's (OpenBLAS behind ``numpy.matmul`` and
Numba's ``np.dot``).  convlab may be called from several Python threads at once (a web
server, a data loader, a notebook's background job), so each pool's rules matter.

**Numba's pool.**  Numba runs ``prange`` loops on one of three *threading layers*
(https://numba.readthedocs.io/en/stable/user/threading-layer.html).  ``omp`` (OpenMP)
and ``tbb`` accept parallel regions launched from several Python threads at once.
``workqueue``, Numba's fallback when neither library is installed, does not: two
concurrent launches abort the whole process ("Concurrent access has been detected").
Every call into a parallel Numba function therefore runs inside :func:`parallel_region`,
which is free under ``omp``/``tbb`` and holds one process-wide lock under ``workqueue``
(so there, convlab's parallel kernels run one at a time; the serial ones never wait).
The layer is only known once a parallel function has run, so the first region runs a
tiny one, under the lock, and remembers the answer.

**The BLAS's pool.**  Winograd calls a small GEMM per job from inside ``prange``: each
Numba thread must then call a *single-threaded* BLAS, or every call would start
OpenBLAS's own threads on top (oversubscription; OpenBLAS warns "Detect OpenMP Loop and
this application may hang").  threadpoolctl can hold the BLAS to one thread, but that
setting is process-wide: :func:`single_threaded_blas` counts the callers inside it, so the
first one in sets the limit and the last one out restores it (two overlapping calls must
not restore each other's saved value).  While any caller is inside, a ``numpy.matmul``
elsewhere in the process also runs on one thread: slower, never wrong.

**One pool at a time.**  OpenBLAS's own threads, once woken by a multi-threaded GEMM,
spin for a while after it (2**28 cycles, ~0.1 s, unless ``OPENBLAS_THREAD_TIMEOUT`` was set
before NumPy loaded it: :mod:`convlab._blas_threads`), on the cores the next kernel's
Numba threads need.  So convlab's own GEMMs never wake them: :func:`gemm` splits the
product's rows across Numba's threads, each calling a *single-threaded* BLAS, as
Winograd's GEMMs do.  Whatever the import order, after a convlab kernel only Numba's
pool has been running (measured: other threads' CPU time in the 0.1 s after an
``im2col`` call went from ~95 ms to ~5 ms with NumPy imported first;
tests/test_one_pool.py checks the threads' state).

Everything else in convlab is per call (workspaces), per thread (Winograd's scratch
buffers, :mod:`convlab.kernels.winograd`), per ``Conv2d`` (its weight cache, which locks
itself) or per context (im2col's workspace cap, a ``ContextVar``).  docs/design.md,
section "Concurrency", lists it all in one place.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from numba import njit, prange

# Layers that accept concurrent parallel regions from several Python threads.
THREADSAFE_LAYERS = ("omp", "tbb")

# An elementwise pass over fewer values than this (activation.relu, _scan's checks) runs
# in NumPy on one core: starting Numba's threads would cost more than the pass.
PARALLEL_MIN_VALUES = 1 << 16

_layer: str | None = None
_layer_lock = threading.Lock()
_workqueue_lock = threading.RLock()  # re-entrant: a region may call another


@njit(parallel=True)
def _touch(a):  # pragma: no cover - compiled
    for i in prange(a.size):
        a[i] = i


def threading_layer() -> str:
    """Numba's threading layer in this process ('omp', 'tbb' or 'workqueue').

    The first call launches a tiny parallel function (Numba picks the layer on the
    first parallel launch and keeps it); the answer is remembered."""
    global _layer
    if _layer is None:
        with _layer_lock, _workqueue_lock:
            if _layer is None:
                import numba

                _touch(np.empty(4))
                try:
                    _layer = numba.threading_layer()
                except ValueError:  # pragma: no cover - a parallel function just ran
                    _layer = "unknown"
    return _layer


@contextlib.contextmanager
def parallel_region() -> Iterator[None]:
    """Wrap every call into a parallel Numba function: serialises them under the
    ``workqueue`` layer (which would abort the process), costs nothing otherwise."""
    if threading_layer() in THREADSAFE_LAYERS:
        yield
        return
    with _workqueue_lock:
        yield


class _BlasLimit:
    """A reference-counted ``threadpool_limits(1, 'blas')`` (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._active: Any = None
        self._controller: Any = None
        self._looked = False

    def controller(self) -> Any:
        """threadpoolctl's controller over the BLAS libraries loaded here, or None."""
        with self._lock:
            if not self._looked:
                self._looked = True
                try:
                    # load SciPy's BLAS (the one Numba's np.dot calls) before looking
                    import scipy.linalg.cython_blas  # noqa: F401
                    from threadpoolctl import ThreadpoolController

                    self._controller = ThreadpoolController()
                except ImportError:
                    self._controller = None
            return self._controller

    @contextlib.contextmanager
    def __call__(self) -> Iterator[bool]:
        controller = self.controller()
        if controller is None:
            yield False
            return
        with self._lock:
            if self._inside == 0:
                self._active = controller.limit(limits=1, user_api="blas")
            self._inside += 1
        try:
            yield True
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    self._active.restore_original_limits()
                    self._active = None


single_threaded_blas = _BlasLimit()
"""``with single_threaded_blas() as held:`` the BLAS runs on the calling thread only
(``held`` is False when threadpoolctl or SciPy is missing: then nothing is changed)."""


def blas_can_be_limited() -> bool:
    """Whether :data:`single_threaded_blas` can actually hold the BLAS to one thread."""
    return single_threaded_blas.controller() is not None


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = a @ b`` on Numba's threads, each multiplying a block of ``a``'s rows with
    a single-threaded BLAS (see "One pool at a time" above).  ``a``, ``b`` and ``out``:
    2-D, C-contiguous, one dtype (float32 or float64)."""
    import numba

    threads = numba.get_num_threads()
    block = max(1, -(-a.shape[0] // threads))
    with single_threaded_blas(), parallel_region():
        _gemm_rows(a, b, out, block)
    return out


@njit(parallel=True, cache=True)
def _gemm_rows(a, b, out, block):  # pragma: no cover - compiled
    n_blocks = (a.shape[0] + block - 1) // block
    for t in prange(n_blocks):
        lo = t * block
        hi = min(a.shape[0], lo + block)
        np.dot(a[lo:hi], b, out[lo:hi])
