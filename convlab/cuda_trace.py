"""See every GPU thread: record each global- and shared-memory access of a ``numba.cuda`` kernel.

A GPU kernel is hard to debug because thousands of threads run it at once and
none of them prints.  Numba's CUDA *simulator* runs the kernel's Python code on
the CPU, one Python thread per CUDA thread and one block at a time; this module
runs a kernel on that machinery with every array argument, and every
``cuda.shared.array``, replaced by a recording wrapper.  Each read, write and
atomic is logged with *who* did it (block, thread), *where* (array, element)
and *when* (the barrier phase: how many ``cuda.syncthreads()`` the thread had
passed).  No GPU is needed, and ``NUMBA_ENABLE_CUDASIM`` need not be set: the
tracer drives the simulator's classes itself, so it works in any process.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from convlab.cuda_trace import trace
    >>> @cuda.jit
    ... def copy(src, dst):
    ...     i = cuda.grid(1)
    ...     if i < dst.size:
    ...         dst[i] = src[i]
    >>> t = trace(copy, 2, 4, np.arange(6.0), np.zeros(6))
    >>> t.counts()["src"]["reads"], t.counts()["dst"]["writes"], t.findings
    (6, 6, [])

What it measures (``Trace.counts``, ``per_thread``, ``phases``, ``count_map``):
reads and writes per array, per thread, per block and per barrier phase, and
the *reuse factor*: accesses / distinct elements touched.  Global-memory
traffic is what a memory-bound kernel's speed follows; here it is counted
exactly, element by element, with no cache assumed.

What it checks (``Trace.findings``), each finding naming a thread and an index:

* **out-of-bounds**: an index past an axis's end (the simulator would raise a
  bare IndexError; a GPU reads garbage or faults).  The read returns NaN and
  the write is dropped, so the run goes on and every such access is counted.
  A negative index is reported too: Numba wraps it around (``x[-1]`` is the
  last element) exactly as on a GPU, which in a convolution is nearly always a
  missing padding check.
* **race**: two threads touch one element, at least one of them writing
  (not atomically), with nothing ordering them: both in the same block and
  the same barrier phase, or (global memory) in different blocks, which no
  barrier orders at all.  That covers write-write, read-after-write and
  write-after-read.  The verdict does not depend on the order the simulator
  happened to run the threads in: within a phase, threads are unordered.
* **uninitialised**: a read of shared memory that no thread wrote in an
  earlier phase and the reading thread did not write earlier in this one
  (shared memory starts as garbage; here it starts as NaN).
* **divergent-barrier**: a block whose threads did not all pass the same
  ``syncthreads`` calls, in number and place (an early ``return``, or a
  barrier inside an ``if`` on the thread index).  That is undefined behaviour
  on a GPU (it may hang); the simulator lets it pass silently.

What it does not see: local arrays and scalars (registers), warp-level
behaviour (the simulator has no warps, so a warp-synchronous kernel is
reported as racy), memory fences, and races through atomics against plain
reads.  Limits keep it a teaching tool: ``max_threads`` per launch,
``max_events`` accesses and ``timeout_s`` seconds (a thread spinning on memory
cannot hang it; a loop that touches no array can, as in the bare simulator).
"""

from __future__ import annotations

import inspect
import itertools
import linecache
import operator
import re
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import numpy as np

# the analysis of a recorded launch is its own module; its names are importable from here
from .cuda_trace_result import ATOMIC, READ, WRITE
from .cuda_trace_result import KINDS as KINDS
from .cuda_trace_result import ArrayInfo as ArrayInfo
from .cuda_trace_result import Finding as Finding
from .cuda_trace_result import Trace as Trace

if TYPE_CHECKING:  # imported when a launch is traced (numba.cuda's simulator)
    from numba.cuda.simulator.kernel import BlockThread

MAX_THREADS = 4096  # ~1 ms per simulated thread: a few seconds per launch
MAX_EVENTS = 2_000_000  # 24 bytes each while running
TIMEOUT_S = 300.0
SWITCH_INTERVAL_S = 0.0005  # the GIL switch interval while tracing (see trace())


class TraceLimitError(RuntimeError):
    """The launch is too big for the tracer, or ran out of its event or time budget."""


# ----------------------------------------------------------------- recording
class _ThreadState:
    """What one simulated thread has done: its events, its barrier phase."""

    __slots__ = ("block", "thread", "phase", "buf", "sites")

    def __init__(self, block: int, thread: int) -> None:
        self.block, self.thread = block, thread
        self.phase = 0
        self.buf = array("q")  # (code, address, phase) triples; code = array id * 4 + kind
        self.sites: list[tuple[str, int]] = []  # where each syncthreads it passed was


def _state() -> _ThreadState:
    return threading.current_thread()._convlab_trace  # type: ignore[attr-defined]


class _Recorder:
    """Shared by all threads of one traced launch."""

    def __init__(self, grid: tuple[int, int, int], block: tuple[int, int, int],
                 max_events: int, timeout_s: float) -> None:
        self.grid, self.block = grid, block
        self.arrays: list[ArrayInfo] = []
        self.max_events = max_events
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.shared: dict[tuple[int, tuple[str, int]], TracedArray] = {}
        self.shared_ids: dict[tuple[str, int], int] = {}
        self.oob: list[tuple[int, int, int, int, tuple[int, ...], int]] = []
        self.finished: list[_ThreadState] = []
        self.running = 0

    def add_array(self, info: ArrayInfo) -> int:
        self.arrays.append(info)
        return len(self.arrays) - 1

    def log(self, code: int, addr: int) -> None:
        st = _state()
        st.buf.extend((code, addr, st.phase))
        n = next(self.counter)
        if n > self.max_events:
            raise TraceLimitError(f"more than {self.max_events:,} memory accesses: the "
                                  "tracer is for small launches (pass max_events= to raise it)")
        if not n & 1023 and time.monotonic() > self.deadline:
            self._timeout()

    def _timeout(self) -> None:
        raise TraceLimitError(f"the kernel ran for more than {self.timeout_s:g} s (a thread "
                              "waiting for another that never comes?)")

    def out_of_bounds(self, array_id: int, kind: int, index: tuple[int, ...]) -> None:
        st = _state()
        self.oob.append((st.block, st.thread, array_id, kind, index, len(st.buf) // 3))

    def barrier(self, frame: Any) -> None:
        st = _state()
        st.sites.append((frame.f_code.co_filename, frame.f_lineno))
        if time.monotonic() > self.deadline:
            self._timeout()
        # barrier() runs on a kernel thread the simulator started: a BlockThread
        cast("BlockThread", threading.current_thread()).syncthreads()
        st.phase += 1


class TracedArray:
    """An array as a kernel sees it, logging each element access.

    Supports what kernels do with arrays: integer indexing (any integer type),
    basic slicing (a view, itself traced), ``shape``, ``ndim``, ``size``,
    ``dtype`` and ``len``.  Addresses are flat C-order positions in the array
    the kernel was given (or in the shared array).
    """

    def __init__(self, data: np.ndarray, rec: _Recorder, array_id: int,
                 addr: np.ndarray | None = None) -> None:
        self._data = data
        self._rec = rec
        self._id = array_id
        self._addr = addr  # None: a root array (addresses by arithmetic); else a view's map
        self._cstrides = tuple(int(np.prod(data.shape[d + 1:], dtype=np.int64))
                               for d in range(data.ndim))
        self._fill = np.nan if data.dtype.kind in "fc" else 0
        self.shape = tuple(data.shape)
        self.ndim = data.ndim
        self.size = data.size
        self.dtype = data.dtype

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<traced {self._rec.arrays[self._id].name}{list(self.shape)}>"

    def _locate(self, idx: Any, kind: int) -> tuple[tuple[int, ...] | None, int] | None:
        """(element index, address) of an element access, (None, -1) if out of bounds,
        None if ``idx`` selects a sub-array (a view)."""
        if type(idx) is not tuple:
            idx = (idx,)
        if len(idx) != self.ndim:
            return None
        pos = []
        bad = False
        for i in idx:
            if type(i) is not int:
                if isinstance(i, slice):
                    return None
                try:
                    i = operator.index(i)
                except TypeError:
                    raise TypeError(f"array index must be an integer, got "
                                    f"{type(i).__name__} {i!r} (a GPU kernel cannot index "
                                    "with it)") from None
            pos.append(i)
        for d, n in enumerate(self.shape):
            i = pos[d]
            if i < 0 or i >= n:
                bad = True
                if -n <= i < 0:
                    pos[d] = i + n  # Numba wraps a negative index around, on a GPU as here
        where = tuple(pos)
        if bad:
            self._rec.out_of_bounds(self._id, kind, tuple(operator.index(i) for i in idx))
            if any(i < 0 or i >= n for i, n in zip(where, self.shape)):
                return None, -1
        if self._addr is None:
            addr = sum(i * s for i, s in zip(where, self._cstrides))
        else:
            addr = int(self._addr[where])
        return where, addr

    def __getitem__(self, idx: Any) -> Any:
        loc = self._locate(idx, READ)
        if loc is None:
            return self._view(idx)
        where, addr = loc
        if where is None:
            return self._data.dtype.type(self._fill)
        self._rec.log(self._id * 4 + READ, addr)
        return self._data[where]

    def __setitem__(self, idx: Any, value: Any) -> None:
        loc = self._locate(idx, WRITE)
        if loc is None:
            raise TypeError("the tracer records element writes only; write one element at "
                            "a time (as a GPU thread does)")
        where, addr = loc
        if where is None:
            return  # out of bounds: dropped (and reported)
        self._rec.log(self._id * 4 + WRITE, addr)
        self._data[where] = value

    def _atomic(self, idx: Any) -> tuple[int, ...] | None:
        loc = self._locate(idx, ATOMIC)
        if loc is None:
            raise TypeError("an atomic needs one element")
        where, addr = loc
        if where is not None:
            self._rec.log(self._id * 4 + ATOMIC, addr)
        return where

    def _view(self, idx: Any) -> TracedArray:
        addr = self._addr
        if addr is None:
            addr = np.arange(self._data.size, dtype=np.int64).reshape(self._data.shape)
        try:
            sub, sub_addr = self._data[idx], addr[idx]
        except IndexError as err:
            raise IndexError(f"{self!r}[{idx!r}]: {err}") from None
        if not np.shares_memory(sub, self._data):
            raise TypeError("the tracer follows integer and slice indexing only")
        return TracedArray(sub, self._rec, self._id, sub_addr)


# ----------------------------------------------------------------- the fake cuda module
def _simulator() -> Any:
    """Numba's CUDA simulator classes (importable with or without NUMBA_ENABLE_CUDASIM)."""
    from numba.cuda.simulator import kernel, kernelapi

    return kernel, kernelapi


def _make_module(rec: _Recorder, grid: tuple[int, int, int], block: tuple[int, int, int],
                 dynshared: int) -> Any:
    from numba.cuda.simulator import kernelapi

    class Shared:
        def array(self, shape: Any, dtype: Any) -> TracedArray:
            from numba.core import types
            from numba.np import numpy_support

            if isinstance(dtype, types.Type):
                dtype = numpy_support.as_dtype(dtype)
            dtype = np.dtype(dtype)
            frame = sys._getframe(1)
            site = (frame.f_code.co_filename, frame.f_lineno)
            if shape == 0:  # dynamic shared memory: the size given at launch
                shape = dynshared // dtype.itemsize
            shape = tuple(shape) if isinstance(shape, tuple | list) else (int(shape),)
            st = _state()
            with rec.lock:
                arr = rec.shared.get((st.block, site))
                if arr is None:
                    sid = rec.shared_ids.get(site)
                    if sid is None:
                        sid = rec.add_array(ArrayInfo(_shared_name(site), "shared", shape,
                                                      dtype))
                        rec.shared_ids[site] = sid
                    fill = np.nan if dtype.kind in "fc" else 0
                    arr = TracedArray(np.full(shape, fill, dtype), rec, sid)
                    rec.shared[(st.block, site)] = arr
            return arr

    class Atomic:
        """Each atomic is one logged access; the operation is the simulator's own."""

        def __init__(self) -> None:
            self._base = kernelapi.FakeCUDAAtomic()

        def __getattr__(self, name: str) -> Callable[..., Any]:
            op = getattr(self._base, name)

            def run(ary: Any, *args: Any) -> Any:
                if not isinstance(ary, TracedArray):
                    return op(ary, *args)
                if name in ("compare_and_swap",):
                    where = ary._atomic((0,) * ary.ndim)
                    return op(ary._data, *args)
                where = ary._atomic(args[0])
                if where is None:  # out of bounds: reported; nothing happens
                    return ary._data.dtype.type(ary._fill)
                return op(ary._data, where, *args[1:])

            return run

    class Grid:
        def sync(self) -> None:
            rec.barrier(sys._getframe(1))

    class CG:
        def this_grid(self) -> Grid:
            return Grid()

    class Module(kernelapi.FakeCUDAModule):
        def __init__(self) -> None:
            super().__init__(grid, block, dynshared)
            self._shared = Shared()
            self._atomic = Atomic()
            self._cg = CG()

        def syncthreads(self) -> None:
            rec.barrier(sys._getframe(1))

        def _sync_reduce(self, value: Any, how: Callable[[np.ndarray], Any]) -> Any:
            t = threading.current_thread()
            t._manager.block_state[tuple(t.threadIdx)] = value  # type: ignore[attr-defined]
            rec.barrier(sys._getframe(2))
            result = how(t._manager.block_state)  # type: ignore[attr-defined]
            rec.barrier(sys._getframe(2))
            return result

        def syncthreads_count(self, value: Any) -> int:
            return self._sync_reduce(value, np.count_nonzero)

        def syncthreads_and(self, value: Any) -> int:
            return self._sync_reduce(value, lambda s: int(np.all(s)))

        def syncthreads_or(self, value: Any) -> int:
            return self._sync_reduce(value, lambda s: int(np.any(s)))

    return Module()


_SHARED_LINE = re.compile(r"(\w+)\s*=\s*(?:\w+\.)*shared\.array\s*\(")


def _shared_name(site: tuple[str, int]) -> str:
    """The variable a ``cuda.shared.array`` is assigned to, read from its source line."""
    found = _SHARED_LINE.search(linecache.getline(*site))
    return found.group(1) if found else f"shared@{site[1]}"


def _python_function(kernel: Any) -> Callable[..., Any]:
    """The Python function behind a @cuda.jit kernel (simulator or GPU), or the function."""
    for attr in ("py_func", "fn"):
        inner = getattr(kernel, attr, None)
        if callable(inner) and not hasattr(inner, "py_func"):
            return inner
    if inspect.isfunction(kernel):
        return kernel
    raise TypeError(f"trace() needs a @cuda.jit kernel or a Python function, got "
                    f"{type(kernel).__name__}")


def _is_device_function(obj: Any) -> bool:
    if getattr(obj, "_device", False) is True:  # the simulator's FakeCUDAKernel
        return True
    options = getattr(obj, "targetoptions", None)
    return isinstance(options, dict) and bool(options.get("device"))


@contextmanager
def _swapped_globals(fn: Callable[..., Any], module: Any) -> Iterator[None]:
    """Point ``cuda`` at the tracing module in the kernel's globals and in those of every
    device function it calls (replaced, for the launch, by their Python functions).

    Done once per launch, not per call (the simulator swaps per device-function call,
    which races when threads call at once)."""
    from numba import cuda

    saved: list[tuple[dict, str, Any]] = []
    seen: set[int] = set()
    todo = [fn.__globals__]
    while todo:
        globs = todo.pop()
        if id(globs) in seen:
            continue
        seen.add(id(globs))
        for name, value in list(globs.items()):
            if value is cuda:
                saved.append((globs, name, value))
                globs[name] = module
            elif _is_device_function(value):
                inner = _python_function(value)
                saved.append((globs, name, value))
                globs[name] = inner
                todo.append(inner.__globals__)
    try:
        yield
    finally:
        for globs, name, value in reversed(saved):
            globs[name] = value


def _dims(griddim: Any, blockdim: Any) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    from numba.cuda.errors import normalize_kernel_dimensions

    return normalize_kernel_dimensions(griddim, blockdim)


# ----------------------------------------------------------------- the launch
def trace(kernel: Any, griddim: Any, blockdim: Any, *args: Any,
          max_threads: int = MAX_THREADS, max_events: int = MAX_EVENTS,
          timeout_s: float = TIMEOUT_S, dynshared: int = 0) -> Trace:
    """Run ``kernel[griddim, blockdim](*args)`` on the simulator and record every access.

    ``kernel``: a ``@cuda.jit`` kernel (with or without the simulator switched on) or a
    plain Python function written as one.  ``args``: NumPy arrays (written in place, like
    device memory copied back), simulator device arrays, or scalars.  Arrays are named
    after the kernel's parameters; shared arrays after the variable they are assigned to.

    Raises :class:`TraceLimitError` for a launch of more than ``max_threads`` threads,
    more than ``max_events`` accesses or ``timeout_s`` seconds; an exception inside the
    kernel propagates, naming the thread (``tid=[x, y, z] ctaid=[x, y, z]``).
    """
    fn = _python_function(kernel)
    grid, block = _dims(griddim, blockdim)
    n_threads = int(np.prod(grid)) * int(np.prod(block))
    if n_threads > max_threads:
        raise TraceLimitError(
            f"this launch has {n_threads:,} threads (grid {grid} x block {block}); the tracer "
            f"runs one Python thread per CUDA thread and takes at most {max_threads:,}: "
            "shrink the input (or pass max_threads=)")
    params = list(inspect.signature(fn).parameters)
    rec = _Recorder(grid, block, max_events, timeout_s)
    call_args, copy_back = [], []
    for n, arg in enumerate(args):
        name = params[n] if n < len(params) else f"arg{n}"
        host = arg
        if hasattr(arg, "copy_to_host") and not isinstance(arg, np.ndarray):
            host = getattr(arg, "_ary", None)  # a simulator device array: its memory
            if host is None:  # a real GPU's device array: trace a host copy
                host = arg.copy_to_host()
                copy_back.append((arg, host))
        if isinstance(host, np.ndarray) and host.ndim > 0:
            aid = rec.add_array(ArrayInfo(name, "global", tuple(host.shape), host.dtype))
            call_args.append(TracedArray(host, rec, aid))
        else:
            call_args.append(arg)

    kernel_mod, _ = _simulator()
    module = _make_module(rec, grid, block, dynshared)
    bx, by, _ = block
    gx, gy, _ = grid

    def run_thread(*a: Any) -> None:
        t = threading.current_thread()
        b, th = t.blockIdx, t.threadIdx  # type: ignore[attr-defined]
        st = _ThreadState(b.x + gx * (b.y + gy * b.z), th.x + bx * (th.y + by * th.z))
        t._convlab_trace = st  # type: ignore[attr-defined]
        with rec.lock:
            rec.running += 1
        try:
            fn(*a)
        finally:
            with rec.lock:
                rec.running -= 1
                rec.finished.append(st)

    start = time.perf_counter()
    # The simulator's block manager polls its threads in a busy loop, holding the GIL for
    # a whole switch interval (5 ms by default) while threads released from a barrier
    # wait: a shorter interval halves the time of a barrier-heavy kernel (cuda_tiled).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
    with kernel_mod._push_kernel_context(module), _swapped_globals(fn, module):
        try:
            for gz_ in range(grid[2]):
                for gy_ in range(grid[1]):
                    for gx_ in range(grid[0]):
                        kernel_mod.BlockManager(run_thread, grid, block, False).run(
                            (gx_, gy_, gz_), *call_args)
        except BaseException:
            _wait_for_threads(rec)  # the block's other threads are told to abort: let them
            raise
        finally:
            sys.setswitchinterval(interval)
    for dev, host in copy_back:
        dev.copy_to_device(host)
    return Trace(rec, fn.__name__, time.perf_counter() - start)


def _wait_for_threads(rec: _Recorder, limit_s: float = 5.0) -> None:
    end = time.monotonic() + limit_s
    while rec.running and time.monotonic() < end:
        time.sleep(0.001)


# ----------------------------------------------------------------- convlab's two kernels
def trace_conv(algo: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
               spec: Any, config: Any = None, threads: int = 32,
               **limits: Any) -> tuple[Trace, np.ndarray]:
    """Trace ``cuda_naive`` or ``cuda_tiled`` on arrays from :func:`convlab.functional.prepare`,
    launched as ``naive_device`` / ``tiled_device`` launch them (naive: ``threads`` per
    block; tiled: ``config``, by default the simulator's tiles).  Returns the trace and
    the output (check it against the oracle: a trace is also a run)."""
    from .kernels import cuda as ck

    if algo not in ("cuda_naive", "cuda_tiled"):
        raise ValueError(f"trace_conv traces 'cuda_naive' or 'cuda_tiled', not {algo!r}")
    if spec.padding_mode != "zeros":
        raise ValueError("the kernels pad with zeros only: pass arrays from "
                         "convlab.functional.prepare")
    dtype = x.dtype
    b = np.zeros(spec.out_channels, dtype) if bias is None else bias
    out = np.full(spec.batched_output_shape, np.nan, dtype)
    top, left = spec.padding[0], spec.padding[2]
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    if algo == "cuda_naive":
        blocks = max(1, -(-out.size // threads))
        t = trace(ck._naive_kernel(), blocks, threads, x, weight, b, out, sh, sw, top, left,
                  dh, dw, **limits)
    else:
        cfg = ck.TileConfig(*config) if config is not None else ck.SIM_CONFIG
        why = cfg.problem(spec, dtype.itemsize)
        if why is not None:
            raise ValueError(f"cuda_tiled {why}")
        kern, nt = ck._tiled_kernel(np.dtype(dtype).name, kh, kw, sh, sw, dh, dw, cfg)
        t = trace(kern, cfg.grid(spec), nt, x, weight, b, out, top, left, **limits)
    return t, out


def _valid_taps(out_size: int, k: int, s: int, d: int, before: int, size: int) -> int:
    """Pairs (output position, tap) whose input position lies inside the input."""
    pos = np.arange(out_size)[:, None] * s + np.arange(k)[None, :] * d - before
    return int(np.count_nonzero((pos >= 0) & (pos < size)))


def _valid_span(start: int, length: int, size: int) -> int:
    """Cells of [start, start + length) inside [0, size)."""
    return max(0, min(start + length, size) - max(start, 0))


def expected_reads(spec: Any, algo: str, config: Any = None) -> dict[str, int]:
    """The elements convlab's kernel ``algo`` loads from global memory, by arithmetic:
    what a trace of it counts, exactly.

    ``convlab.kernels.cuda.global_loads`` counts 2 per multiply-add for ``cuda_naive``
    (taps in the padding included: an upper bound) and what ``cuda_tiled`` *stages*
    (zeros for padding and for channels past the end included).  A kernel loads only
    what it reads: here a tap in the padding, or a staged cell outside the input or
    past the last channel, costs nothing.  ``bias``: the bias reads (one per output
    for naive, one per thread and channel for tiled); ``total`` = input + weight, as in
    ``global_loads``.
    """
    from .kernels import cuda as ck

    n, k_out, ho, wo = spec.batched_output_shape
    cg = spec.in_channels // spec.groups
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    top, _, left, _ = spec.padding
    if algo == "cuda_naive":
        taps = (_valid_taps(ho, kh, sh, dh, top, spec.height)
                * _valid_taps(wo, kw, sw, dw, left, spec.width))
        counts = {"input": n * k_out * cg * taps, "weight": n * k_out * cg * taps,
                  "bias": n * k_out * ho * wo}
    elif algo == "cuda_tiled":
        cfg = ck.TileConfig(*config) if config is not None else ck.SIM_CONFIG
        ph, pw = cfg.patch(spec)
        rows = sum(_valid_span(r * cfg.th * sh - top, ph, spec.height)
                   for r in range(-(-ho // cfg.th)))
        cols = sum(_valid_span(c * cfg.tw * sw - left, pw, spec.width)
                   for c in range(-(-wo // cfg.tw)))
        tiles, k_tiles, _ = cfg.grid(spec)
        k_tiles //= spec.groups
        counts = {"input": n * spec.groups * k_tiles * cg * rows * cols,
                  "weight": n * tiles * k_out * cg * kh * kw,
                  "bias": n * tiles * (cfg.th * cfg.tw // cfg.rp) * k_out}
    else:
        raise ValueError(f"expected_reads knows 'cuda_naive' and 'cuda_tiled', not {algo!r}")
    return {**counts, "total": counts["input"] + counts["weight"]}


def trace_spec(spec: Any, algo: str, config: Any = None, seed: int = 0,
               dtype: Any = np.float32, **limits: Any) -> tuple[Trace, np.ndarray]:
    """:func:`trace_conv` on random arrays of ``spec``'s shapes (the counts do not depend
    on the values); returns the trace and the output."""
    from .kernels import get
    from .reference import compare, conv2d_reference

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.batch, spec.in_channels, spec.height, spec.width)
                            ).astype(dtype)
    w = rng.standard_normal(spec.weight_shape).astype(dtype)
    b = rng.standard_normal(spec.out_channels).astype(dtype)
    t, out = trace_conv(algo, x, w, b, spec, config, **limits)
    report = compare(out, conv2d_reference(x, w, b, spec),
                     get(algo).tolerance(spec, np.dtype(dtype)))
    if not report.ok:
        raise AssertionError(f"{algo} traced a wrong result: {report} on {spec.describe()}")
    return t, out
