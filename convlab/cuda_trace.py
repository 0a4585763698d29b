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
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_THREADS = 4096  # ~1 ms per simulated thread: a few seconds per launch
MAX_EVENTS = 2_000_000  # 24 bytes each while running
TIMEOUT_S = 300.0
SWITCH_INTERVAL_S = 0.0005  # the GIL switch interval while tracing (see trace())

READ, WRITE, ATOMIC = 0, 1, 2
KINDS = ("read", "write", "atomic")


class TraceLimitError(RuntimeError):
    """The launch is too big for the tracer, or ran out of its event or time budget."""


@dataclass(frozen=True)
class ArrayInfo:
    """One traced array: a kernel argument (global) or a ``cuda.shared.array`` (shared)."""

    name: str
    space: str  # "global" | "shared"
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Finding:
    """One kind of bug on one array; ``message`` names the first thread and index."""

    kind: str  # "out-of-bounds" | "race" | "uninitialised" | "divergent-barrier"
    message: str
    array: str | None = None
    index: tuple[int, ...] | None = None
    block: tuple[int, int, int] | None = None
    thread: tuple[int, int, int] | None = None
    count: int = 1  # how many accesses (or elements, or blocks) show it

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "array": self.array,
                "index": self.index, "block": self.block, "thread": self.thread,
                "count": self.count}


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
        threading.current_thread().syncthreads()
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
    _, kernelapi = _simulator()

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


# ----------------------------------------------------------------- the result
class Trace:
    """Every memory access of one launch, its summaries and its findings.

    Columns, one entry per access: ``array_id``, ``kind`` (0 read, 1 write, 2 atomic),
    ``addr`` (flat C-order element), ``phase``, ``block_id``, ``thread_id`` (linear,
    x fastest) and ``seq`` (the access's position in its thread's program order).
    """

    def __init__(self, rec: _Recorder, kernel: str, seconds: float) -> None:
        self.kernel, self.seconds = kernel, seconds
        self._oob = rec.oob
        self.grid, self.block = rec.grid, rec.block
        self.arrays = list(rec.arrays)
        self.threads_per_block = int(np.prod(self.block))
        self.n_blocks = int(np.prod(self.grid))
        parts, owners = [], []
        for st in rec.finished:
            ev = np.frombuffer(st.buf, dtype=np.int64).reshape(-1, 3) if st.buf else \
                np.zeros((0, 3), np.int64)
            parts.append(ev)
            owners.append((st.block, st.thread, len(ev)))
        ev = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        lens = np.array([n for _, _, n in owners], dtype=np.int64)
        self.array_id = ev[:, 0] // 4
        self.kind = ev[:, 0] % 4
        self.addr = ev[:, 1]
        self.phase = ev[:, 2]
        self.block_id = np.repeat(np.array([b for b, _, _ in owners], np.int64), lens)
        self.thread_id = np.repeat(np.array([t for _, t, _ in owners], np.int64), lens)
        starts = np.cumsum(lens) - lens
        self.seq = np.arange(len(ev), dtype=np.int64) - np.repeat(starts, lens)
        self._barriers = {(st.block, st.thread): st.sites for st in rec.finished}
        self.findings: list[Finding] = self._find()

    def __repr__(self) -> str:
        return (f"<Trace of {self.kernel}[{self.grid}, {self.block}]: {len(self.addr):,} "
                f"accesses, {len(self.findings)} finding(s)>")

    # ------------------------------------------------------------- identities
    def block_index(self, block_id: int) -> tuple[int, int, int]:
        gx, gy, _ = self.grid
        return (int(block_id % gx), int(block_id // gx % gy), int(block_id // (gx * gy)))

    def thread_index(self, thread_id: int) -> tuple[int, int, int]:
        bx, by, _ = self.block
        return (int(thread_id % bx), int(thread_id // bx % by), int(thread_id // (bx * by)))

    def _block_id(self, block: Any) -> int:
        b = tuple(block) + (0,) * (3 - len(tuple(block))) if not isinstance(block, int) else (
            block, 0, 0)
        gx, gy, _ = self.grid
        return b[0] + gx * (b[1] + gy * b[2])

    def _thread_id(self, thread: Any) -> int:
        t = tuple(thread) + (0,) * (3 - len(tuple(thread))) if not isinstance(thread, int) \
            else (thread, 0, 0)
        bx, by, _ = self.block
        return t[0] + bx * (t[1] + by * t[2])

    def info(self, name: str) -> ArrayInfo:
        for a in self.arrays:
            if a.name == name:
                return a
        raise KeyError(f"no traced array {name!r}; the traced arrays are "
                       f"{[a.name for a in self.arrays]}")

    def _aid(self, name: str) -> int:
        return self.arrays.index(self.info(name))

    def _where(self, array: str, idx: tuple[int, ...] | int) -> str:
        shown = ", ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        return f"{array}[{shown}]"

    def _who(self, block_id: int, thread_id: int) -> str:
        return f"thread {self.thread_index(thread_id)} of block {self.block_index(block_id)}"

    def _unravel(self, aid: int, addr: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(int(addr), self.arrays[aid].shape))

    # ------------------------------------------------------------- selections
    def _mask(self, array: str | None = None, kind: str | None = None, space: str | None = None,
              block: Any = None, thread: Any = None, phase: int | None = None) -> np.ndarray:
        m = np.ones(len(self.addr), bool)
        if array is not None:
            m &= self.array_id == self._aid(array)
        if kind is not None:
            m &= self.kind == KINDS.index(kind)
        if space is not None:
            ids = [i for i, a in enumerate(self.arrays) if a.space == space]
            m &= np.isin(self.array_id, ids)
        if block is not None:
            m &= self.block_id == self._block_id(block)
        if thread is not None:
            m &= self.thread_id == self._thread_id(thread)
        if phase is not None:
            m &= self.phase == phase
        return m

    def indices(self, array: str, kind: str = "read", **where: Any) -> list[tuple[int, ...]]:
        """Element indices of ``array`` accessed (``kind``), in order, optionally only by
        one ``block`` / ``thread`` (tuples) or in one barrier ``phase``."""
        m = self._mask(array, kind, **where)
        aid = self._aid(array)
        return [self._unravel(aid, a) for a in self.addr[m]]

    def count_map(self, array: str, kind: str = "read", **where: Any) -> np.ndarray:
        """How many times each element of ``array`` was accessed (an array of its shape)."""
        info = self.info(array)
        m = self._mask(array, kind, **where)
        return np.bincount(self.addr[m], minlength=info.size).reshape(info.shape)

    # ------------------------------------------------------------- summaries
    def counts(self) -> dict[str, dict[str, Any]]:
        """Per array: its space, reads, writes, atomics, distinct elements read and
        written, and ``reuse`` = accesses / distinct elements accessed."""
        out = {}
        for aid, a in enumerate(self.arrays):
            m = self.array_id == aid
            k = self.kind[m]
            row: dict[str, Any] = {"space": a.space, "elements": a.size}
            for kind_id, kind in enumerate(KINDS):
                row[kind + "s"] = int(np.count_nonzero(k == kind_id))
            addr = self.addr[m]
            if a.space == "shared":  # one copy per block: an address is (block, element)
                addr = self.block_id[m] * a.size + addr
            row["distinct_read"] = int(np.unique(addr[k == READ]).size)
            row["distinct_written"] = int(np.unique(addr[k != READ]).size)
            distinct = int(np.unique(addr).size)
            row["reuse"] = int(m.sum()) / distinct if distinct else 0.0
            out[a.name] = row
        return out

    def totals(self) -> dict[str, int]:
        """Reads and writes (atomics count as both) per memory space, over the launch."""
        out = {}
        for space in ("global", "shared"):
            m = self._mask(space=space)
            k = self.kind[m]
            out[f"{space}_reads"] = int(np.count_nonzero(k != WRITE))
            out[f"{space}_writes"] = int(np.count_nonzero(k != READ))
        return out

    def per_thread(self, space: str = "global", kind: str = "read") -> np.ndarray:
        """Accesses per thread, shape (blocks, threads per block), in linear block
        (x fastest) and thread (x fastest) order."""
        m = self._mask(space=space, kind=kind)
        gid = self.block_id[m] * self.threads_per_block + self.thread_id[m]
        return np.bincount(gid, minlength=self.n_blocks * self.threads_per_block).reshape(
            self.n_blocks, self.threads_per_block)

    def per_block(self, space: str = "global", kind: str = "read") -> np.ndarray:
        """Accesses per block, in linear block order (x fastest)."""
        return self.per_thread(space, kind).sum(axis=1)

    def phases(self) -> list[dict[str, int]]:
        """Accesses in each barrier phase (summed over blocks): phase p is what threads
        did after passing p ``syncthreads``."""
        rows = []
        for p in range(int(self.phase.max()) + 1 if len(self.phase) else 0):
            row = {"phase": p}
            for space in ("global", "shared"):
                for kind in ("read", "write"):
                    row[f"{space}_{kind}s"] = int(np.count_nonzero(
                        self._mask(space=space, kind=kind, phase=p)))
            rows.append(row)
        return rows

    def barriers_per_thread(self) -> np.ndarray:
        """How many ``syncthreads`` each thread passed, shape (blocks, threads per block)."""
        out = np.zeros((self.n_blocks, self.threads_per_block), np.int64)
        for (b, t), sites in self._barriers.items():
            out[b, t] = len(sites)
        return out

    def staged(self, shared: str, block: Any = (0, 0, 0), phase: int | None = None,
               source: str | None = None
               ) -> dict[tuple[int, ...], tuple[str, tuple[int, ...]] | None]:
        """Where each element of ``shared`` that ``block`` wrote came from: the global
        (array, index) its writer read just before (since its previous shared write), or
        None for a constant (the zeros of padding).  ``phase``: only writes in that phase;
        ``source``: only reads of that global array count (a kernel may read, say, its
        bias before it stages).  Attribution by program order, which fits copy loops like
        ``s[e] = x[...]``."""
        sid, b = self._aid(shared), self._block_id(block)
        src = None if source is None else self._aid(source)
        m = self.block_id == b
        out: dict[tuple[int, ...], tuple[str, tuple[int, ...]] | None] = {}
        for t in np.unique(self.thread_id[m]):
            sel = np.flatnonzero(m & (self.thread_id == t))
            sel = sel[np.argsort(self.seq[sel], kind="stable")]
            last: tuple[int, int] | None = None
            for e in sel:
                aid, kind = int(self.array_id[e]), int(self.kind[e])
                if self.arrays[aid].space == "global" and kind == READ:
                    if src is None or aid == src:
                        last = (aid, int(self.addr[e]))
                elif self.arrays[aid].space == "shared" and kind == WRITE:
                    if aid == sid and (phase is None or self.phase[e] == phase):
                        key = self._unravel(sid, int(self.addr[e]))
                        out[key] = None if last is None else (
                            self.arrays[last[0]].name, self._unravel(*last))
                    last = None
        return out

    def table(self) -> str:
        """Per array: reads, writes, distinct elements, reuse."""
        lines = [f"{'array':<10}{'space':<8}{'shape':<18}{'reads':>9}{'writes':>8}"
                 f"{'distinct':>10}{'reuse':>8}"]
        for name, c in self.counts().items():
            shape = str(self.info(name).shape)
            distinct = max(c["distinct_read"], c["distinct_written"])
            lines.append(f"{name:<10}{c['space']:<8}{shape:<18}{c['reads'] + c['atomics']:>9,}"
                         f"{c['writes'] + c['atomics']:>8,}{distinct:>10,}{c['reuse']:>8.2f}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The launch, the per-array table, per-thread spread, phases and findings."""
        n = self.n_blocks * self.threads_per_block
        g = self.per_thread("global", "read")
        tot = self.totals()
        lines = [f"{self.kernel}[{self.grid}, {self.block}]: {self.n_blocks} blocks x "
                 f"{self.threads_per_block} threads = {n} threads, traced in "
                 f"{self.seconds:.2f} s", self.table(),
                 f"global reads {tot['global_reads']:,} (per thread {g.min()}..{g.max()}), "
                 f"global writes {tot['global_writes']:,}; shared reads "
                 f"{tot['shared_reads']:,}, shared writes {tot['shared_writes']:,}"]
        phases = self.phases()
        if len(phases) > 1:
            lines.append("per barrier phase (global r/w, shared r/w): " + "; ".join(
                f"{p['phase']}: {p['global_reads']}/{p['global_writes']}, "
                f"{p['shared_reads']}/{p['shared_writes']}" for p in phases[:8])
                + (" ..." if len(phases) > 8 else ""))
        lines.append(f"findings: {len(self.findings)}" if self.findings else "findings: none")
        lines += [f"  {f.kind}: {f.message}" for f in self.findings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    @property
    def ok(self) -> bool:
        return not self.findings

    def raise_for_findings(self) -> None:
        """AssertionError listing every finding (for tests)."""
        if self.findings:
            raise AssertionError("\n".join(f"{f.kind}: {f.message}" for f in self.findings))

    # ------------------------------------------------------------- checks
    def _find(self) -> list[Finding]:
        return (self._find_out_of_bounds() + self._find_divergent_barriers()
                + self._find_races() + self._find_uninitialised())

    def _find_out_of_bounds(self) -> list[Finding]:
        found = []
        groups: dict[tuple[int, int], list] = {}
        for b, t, aid, kind, idx, _ in sorted(self._oob, key=lambda r: (r[0], r[1], r[5])):
            groups.setdefault((aid, kind), []).append((b, t, idx))
        for (aid, kind), hits in sorted(groups.items()):
            b, t, idx = hits[0]
            a = self.arrays[aid]
            verb = {READ: "reads", WRITE: "writes", ATOMIC: "updates (atomic)"}[kind]
            negative = any(i < 0 for i in idx)
            more = len(hits) - 1
            threads = len({(h[0], h[1]) for h in hits})
            msg = (f"{self._who(b, t)} {verb} {self._where(a.name, idx)}, outside "
                   f"{a.name}'s shape {a.shape}"
                   + (" (a negative index: Numba wraps it around to the other end)"
                      if negative else "")
                   + (f"; {more} more out-of-bounds {KINDS[kind]}s of {a.name} by "
                      f"{threads} thread(s)" if more else ""))
            found.append(Finding("out-of-bounds", msg, a.name, idx, self.block_index(b),
                                 self.thread_index(t), len(hits)))
        return found

    def _find_divergent_barriers(self) -> list[Finding]:
        found = []
        by_block: dict[int, dict[int, list]] = {}
        for (b, t), sites in self._barriers.items():
            by_block.setdefault(b, {})[t] = sites
        bad_blocks = []
        for b in sorted(by_block):
            threads = by_block[b]
            counts = {t: len(s) for t, s in threads.items()}
            if len(set(counts.values())) > 1:
                few = min(counts, key=lambda t: (counts[t], t))
                many = max(counts, key=lambda t: (counts[t], -t))
                bad_blocks.append((b, f"{self._who(b, few)} passed {counts[few]} "
                                   f"syncthreads, thread {self.thread_index(many)} passed "
                                   f"{counts[many]}: a barrier not every thread reaches (an "
                                   "early return, or a syncthreads inside an if on the "
                                   "thread index)", few))
                continue
            for p in range(max(counts.values(), default=0)):
                sites = {t: s[p] for t, s in threads.items()}
                if len(set(sites.values())) > 1:
                    t0 = min(sites)
                    t1 = min(t for t in sites if sites[t] != sites[t0])
                    bad_blocks.append((b, f"at barrier {p}, {self._who(b, t0)} waits at the "
                                       f"syncthreads on line {sites[t0][1]}, thread "
                                       f"{self.thread_index(t1)} at the one on line "
                                       f"{sites[t1][1]}: different barriers (a syncthreads "
                                       "inside an if on the thread index)", t0))
                    break
        if bad_blocks:
            b, msg, t = bad_blocks[0]
            if len(bad_blocks) > 1:
                msg += f"; {len(bad_blocks) - 1} more block(s) like it"
            found.append(Finding("divergent-barrier", msg, None, None, self.block_index(b),
                                 self.thread_index(t), len(bad_blocks)))
        return found

    @staticmethod
    def _group(*cols: np.ndarray) -> tuple[np.ndarray, int]:
        """Dense group ids of the rows of ``cols`` (and how many groups)."""
        if not len(cols[0]):
            return np.zeros(0, np.int64), 0
        _, inv = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        return inv, int(inv.max()) + 1

    def _find_races(self) -> list[Finding]:
        """A group of accesses to one element that nothing orders (same block and phase;
        for global memory also: all blocks) races if it has a plain write and 2+ threads."""
        found = []
        shared_ids = [i for i, a in enumerate(self.arrays) if a.space == "shared"]
        is_shared = np.isin(self.array_id, shared_ids)
        gthread = self.block_id * self.threads_per_block + self.thread_id
        # only elements that someone writes (not atomically) can race
        w = self.kind == WRITE
        elem_block = np.where(is_shared, self.block_id, -1)
        wkeys = np.unique(np.stack([self.array_id[w], elem_block[w], self.addr[w]], 1), axis=0)
        if not len(wkeys):
            return found
        keys = np.stack([self.array_id, elem_block, self.addr], 1)
        # rows whose element is written: match by a view on the 3 columns
        kv = np.ascontiguousarray(keys).view([("a", np.int64), ("b", np.int64),
                                              ("c", np.int64)]).reshape(-1)
        wv = np.ascontiguousarray(wkeys).view(kv.dtype).reshape(-1)
        rel = np.flatnonzero(np.isin(kv, wv))
        racy: dict[int, list[tuple[int, int]]] = {}  # array id -> [(row of the write, other)]
        # 1. same block, same phase (shared and global)
        gid, n = self._group(self.array_id[rel], elem_block[rel], self.addr[rel],
                             self.block_id[rel], self.phase[rel])
        self._collect(rel, gid, n, gthread, racy)
        # 2. global memory, different blocks: no barrier orders blocks
        glob = rel[~is_shared[rel]]
        gid, n = self._group(self.array_id[glob], self.addr[glob])
        self._collect(glob, gid, n, self.block_id, racy, gthread)
        for aid in sorted(racy):
            pairs = sorted(racy[aid], key=lambda p: (self.block_id[p[0]], self.thread_id[p[0]],
                                                     self.addr[p[0]]))
            wrow, orow = pairs[0]
            a = self.arrays[aid]
            idx = self._unravel(aid, int(self.addr[wrow]))
            verb = "writes it too" if self.kind[orow] != READ else "reads it"
            same_block = self.block_id[wrow] == self.block_id[orow]
            why = (f"in the same barrier phase {int(self.phase[wrow])}: no cuda.syncthreads() "
                   "between them" if same_block else
                   "from another block: no barrier orders two blocks")
            elements = len({int(self.addr[p[0]]) + (int(self.block_id[p[0]]) << 40)
                            for p in pairs})
            msg = (f"{self._who(self.block_id[wrow], self.thread_id[wrow])} writes "
                   f"{self._where(a.name, idx)} and "
                   f"{self._who(self.block_id[orow], self.thread_id[orow])} {verb}, {why}"
                   + (f"; {elements - 1} more element(s) of {a.name} race"
                      if elements > 1 else ""))
            found.append(Finding("race", msg, a.name, idx,
                                 self.block_index(self.block_id[wrow]),
                                 self.thread_index(self.thread_id[wrow]), elements))
        return found

    def _collect(self, rows: np.ndarray, gid: np.ndarray, n: int, who: np.ndarray,
                 racy: dict[int, list[tuple[int, int]]], thread: np.ndarray | None = None
                 ) -> None:
        """Groups with a plain write and 2+ distinct ``who`` (threads, or blocks): for
        each, one (write row, row of another thread/block) example."""
        if not n:
            return
        whos = who[rows]
        pair_ids, _ = self._group(gid, whos)
        distinct = np.bincount(gid[np.unique(pair_ids, return_index=True)[1]], minlength=n)
        has_write = np.bincount(gid, weights=(self.kind[rows] == WRITE), minlength=n) > 0
        first = np.flatnonzero((distinct >= 2) & has_write)
        if not len(first):
            return
        order = np.argsort(gid, kind="stable")
        bounds = np.searchsorted(gid[order], np.arange(n + 1))
        for g in first[:10000]:
            members = rows[order[bounds[g]:bounds[g + 1]]]
            writes = members[self.kind[members] == WRITE]
            wrow = writes[np.lexsort((self.thread_id[writes], self.block_id[writes]))[0]]
            others = members[who[members] != who[wrow]]
            orow = others[np.lexsort((self.thread_id[others], self.block_id[others]))[0]]
            racy.setdefault(int(self.array_id[wrow]), []).append((int(wrow), int(orow)))

    def _find_uninitialised(self) -> list[Finding]:
        """Shared reads with no write to the element in an earlier phase (any thread of
        the block) and none earlier in this phase by the reading thread."""
        found = []
        for sid, a in enumerate(self.arrays):
            if a.space != "shared":
                continue
            m = self.array_id == sid
            rows = np.flatnonzero(m)
            if not len(rows):
                continue
            elem = self.block_id[rows] * a.size + self.addr[rows]
            wr = self.kind[rows] != READ
            first_w = np.full(self.n_blocks * a.size, np.iinfo(np.int64).max)
            np.minimum.at(first_w, elem[wr], self.phase[rows][wr])
            rd = ~wr
            suspect = rows[rd][first_w[elem[rd]] >= self.phase[rows][rd]]
            if not len(suspect):
                continue
            # the reading thread's own earlier write in the same phase initialises it
            own = {}
            for r in rows[wr]:
                k = (int(self.block_id[r]), int(self.thread_id[r]), int(self.phase[r]),
                     int(self.addr[r]))
                own[k] = min(own.get(k, 1 << 62), int(self.seq[r]))
            bad = [r for r in suspect
                   if own.get((int(self.block_id[r]), int(self.thread_id[r]),
                               int(self.phase[r]), int(self.addr[r])), 1 << 62)
                   > self.seq[r]]
            if not bad:
                continue
            bad.sort(key=lambda r: (self.block_id[r], self.thread_id[r], self.seq[r]))
            r = bad[0]
            idx = self._unravel(sid, int(self.addr[r]))
            elements = len({(int(self.block_id[x]), int(self.addr[x])) for x in bad})
            msg = (f"{self._who(self.block_id[r], self.thread_id[r])} reads "
                   f"{self._where(a.name, idx)} in barrier phase {int(self.phase[r])}, but no "
                   "thread wrote it before (shared memory starts as garbage; NaN here)"
                   + (f"; {elements - 1} more element(s) of {a.name} read uninitialised"
                      if elements > 1 else ""))
            found.append(Finding("uninitialised", msg, a.name, idx,
                                 self.block_index(self.block_id[r]),
                                 self.thread_index(self.thread_id[r]), elements))
        return found


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
