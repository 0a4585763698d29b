"""CUDA kernels written in Python with ``numba.cuda``: one thread per output, then tiles.

A GPU runs thousands of *threads* at once.  They come in *blocks* (up to 1024
threads that share a fast on-chip *shared memory* of ~48-228 KB and can wait for
each other with ``cuda.syncthreads()``); the blocks of a launch form the *grid*.
Global memory (the GPU's DRAM, 3-5 TB/s on an H100/H200) is far slower than
shared memory and registers, so the art is to read each number from it as few
times as possible.  docs/cuda.md tells the story with pictures and counts.

``cuda_naive``: one thread per output element ``out[n, k, i, j]``, exactly the
loop body of ``naive.py``.  Consecutive threads take consecutive ``j`` so a warp
(32 threads) reads and writes neighbouring addresses (*coalesced*).  Every
multiply-add reads one input and one weight from global memory: 2 loads per
MAC, which the caches soften but cannot remove.

``cuda_tiled``: a block computes a tile of ``TH x TW`` output pixels of one
image for ``TK`` output channels of one group.  For each chunk of ``CK`` input
channels it

1. copies the input *patch* those outputs need (the tile's receptive field: the
   tile scaled by the stride plus the dilated kernel's *halo*, zeros where it
   hangs over the padding) and the ``TK x CK x kh x kw`` weights into shared
   memory, every thread loading a few elements with neighbouring threads on
   neighbouring addresses;
2. ``cuda.syncthreads()``: nobody computes before the tile is complete;
3. lets each thread accumulate ``RK`` channels x ``RP`` pixels in registers
   (*register blocking*): per tap it loads RK weights and RP inputs from shared
   memory and does RK*RP multiply-adds, so each load feeds several MACs;
4. ``cuda.syncthreads()`` again: nobody overwrites the tile while others read it.

Every global element is then read once per block instead of once per MAC: for
ResNet's 64@56 layer the input+weight loads drop from 1.85e9 (naive) to about
1e7 (``global_loads`` counts them).  Every thread of a block reaches every
``syncthreads`` (threads whose outputs fall off a ragged edge still load and
wait; they just don't store), because a barrier that some threads skip is
undefined behaviour on a real GPU (the simulator does not catch it).

How big a tile?  More outputs per thread means more reuse per load, but more
registers per thread, and fewer threads in all.  A multiprocessor hides the latency
of memory by switching between the warps it holds, *or* by the independent
multiply-adds each thread has in flight (V. Volkov, "Better performance at lower
occupancy").  Measured on an H200 (scripts/gpu_check.py's tile sweep), the second
wins: 32 accumulators per thread at 7-12 warps per SM beat 8-16 accumulators at 24-27
warps by 1.1-1.6x on ResNet's 64@56 and 128@28 layers, as long as the grid still puts
a block on (nearly) every SM.  So ``choose_config`` takes the most register blocking
whose grid gives every multiprocessor ``FILL_WARPS_PER_SM`` (6) warps and
``FILL_BLOCKS_PER_SM`` (0.75) blocks, and the kernel is compiled with launch bounds
that size its registers for ``MIN_WARPS_PER_SM`` (16) warps, so a block never has to
wait for registers (:mod:`convlab.occupancy` has the arithmetic; ``convlab info
--cuda-static`` shows what the compiler made of every variant, no GPU needed).

Both kernels fuse the bias (the accumulator starts at it), do zero padding
in-kernel (taps outside the input read 0; other padding modes arrive padded by
``convlab.conv2d``) and handle every stride, dilation, group count and ragged
edge, in float32 and float64.  Sums run in the order (c, p, q), like
``naive.py``; a GPU may fuse each multiply-add into one rounding (FMA), so the
last bits differ from the CPU kernels.

Compilation is lazy: importing convlab imports no ``numba.cuda`` and compiles
nothing.  A tiled kernel is compiled on first use for each (dtype, kernel size,
stride, dilation, tile) because those sizes are compile-time constants: the
shared arrays need constant sizes, and constant loops unroll into registers.

Availability: a CUDA GPU with ``pip install 'convlab[cuda]'`` (the numba-cuda
package), or the CPU *simulator*: ``NUMBA_ENABLE_CUDASIM=1`` set before numba is
imported.  The simulator runs one block at a time with a Python thread per CUDA
thread (~1 ms per thread), so it is for tiny shapes and for learning.

Timing: ``convlab bench --device cuda`` (:mod:`convlab.bench`: CUDA events around
launches on inputs already on the GPU, through this module's ``place`` hook;
transfers in and out timed apart; PyTorch/cuDNN as the rival).  Sources: NVIDIA's CUDA C++
Programming Guide (shared memory, coalescing, bank conflicts); Chetlur et al.
2014, "cuDNN: efficient primitives for deep learning" (arXiv 1410.0759);
V. Volkov, "Better performance at lower occupancy" (GTC 2010) for register
blocking.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ..shapes import ConvSpec
from ..system import CudaStatus, cuda_status

# the tile configuration and CUDA's limits live in _cuda_config (shared with the device
# code without an import loop); still importable from here, where they are explained
from ._cuda_config import MAX_GRID_YZ as MAX_GRID_YZ
from ._cuda_config import MIN_WARPS_PER_SM as MIN_WARPS_PER_SM
from ._cuda_config import SHARED_LIMIT as SHARED_LIMIT
from ._cuda_config import TileConfig as TileConfig
from .registry import NonFinite, Placed, UnsupportedSpecError, register

THREADS_NAIVE = 256  # threads per block of cuda_naive on a GPU (32 on the simulator)
# What the grid must give every SM for choose_config to take a blocking (most accumulators
# first): measured on an H200, register blocking beats occupancy down to ~7 warps per SM,
# but a grid with blocks for under ~3/4 of the SMs leaves the rest idle (256@14, 512@7).
# (MIN_WARPS_PER_SM, in _cuda_config, is what the launch bounds size the registers for.)
FILL_WARPS_PER_SM = 6
FILL_BLOCKS_PER_SM = 0.75
SMEM_RESERVED = 1024  # bytes of shared memory the system keeps per block (sm_80 on)
MAX_THREADS = 512  # threads per block choose_config allows: bigger blocks wait longer at barriers


def restore_row_stack(numpy: ModuleType = np) -> bool:
    """Give NumPy back ``row_stack`` (an alias of ``vstack``) where it was removed.

    numba-cuda 0.30.4 (the newest release as of 2026-12) registers a GPU overload for
    ``np.row_stack`` when it compiles its first kernel; NumPy 2.5 removed that alias (it was
    deprecated in 2.0), so on NumPy >= 2.5 every ``@cuda.jit`` kernel, convlab's and the
    notebook's own, failed to compile with ``AttributeError: module 'numpy' has no
    attribute 'row_stack'`` (found on the first run on a real GPU, an H200).  Restoring the
    alias is what NumPy had until 2.4; it changes nothing where it exists.  Returns True
    when it was restored."""
    if "row_stack" in vars(numpy):
        return False
    numpy.row_stack = numpy.vstack  # type: ignore[attr-defined]
    return True


restore_row_stack()  # before any kernel, convlab's or the user's, is compiled


# ----------------------------------------------------------------- availability
@functools.lru_cache(maxsize=1)
def status() -> CudaStatus:
    """'gpu: NAME', 'simulator (...)' or 'missing: how to get it' (cached; ``.kind``
    says which: :class:`convlab.system.CudaStatus`)."""
    return cuda_status()


def is_simulator() -> bool:
    return status().kind == "simulator"


def cuda_unavailable() -> str | None:
    """None when CUDA kernels can run here (a GPU or the simulator), else how to get them."""
    state = status()
    return None if state.usable else state.detail


@functools.lru_cache(maxsize=1)
def _multiprocessors() -> int:
    """Streaming multiprocessors of the current GPU (a nominal 132 on the simulator)."""
    if is_simulator():
        return 132
    from numba import cuda

    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


@functools.lru_cache(maxsize=1)
def _shared_per_sm() -> int | None:
    """Bytes of shared memory per multiprocessor of the current GPU (None: unknown)."""
    if is_simulator():
        return None
    from numba import cuda

    try:
        return int(cuda.get_current_device().MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)
    except Exception:  # an attribute this driver does not report: no shared-memory rule
        return None


# Tiny tiles for the simulator, where every thread is a Python thread: 16 threads
# per block, yet ragged edges, several channel tiles and several chunks still occur.
SIM_CONFIG = TileConfig(tk=4, rk=2, th=4, tw=4, rp=2, ck=2)


def _pow2_at_least(n: int, cap: int) -> int:
    p = 1
    while p < n and p < cap:
        p *= 2
    return p


# (tk, rk, rp): output channels per block, and channels x pixels per thread; the most
# multiply-adds per shared-memory load first (rk*rp of them per rk + rp loads), then
# bigger channel tiles (every block re-reads its input patch: fewer blocks, fewer reads).
BLOCKINGS = tuple(sorted(
    ((tk, rk, rp) for tk in (64, 32, 16, 8) for rk in (8, 4, 2, 1) for rp in (4, 2, 1)
     if rk <= tk),
    key=lambda b: (-b[1] * b[2], b[1] + b[2], -b[0])))


def pixel_tile(out_height: int, out_width: int) -> tuple[int, int]:
    """th x tw with tw in {8, 16, 32} and 32..128 pixels, wasting the fewest outputs
    on ragged edges; ties go to bigger tiles (more reuse), then wider ones."""
    best: tuple[tuple[int, int, int], int, int] | None = None
    for tw in (8, 16, 32):
        for th in range(1, 17):
            if 32 <= th * tw <= 128:
                padded = math.ceil(out_height / th) * th * math.ceil(out_width / tw) * tw
                key = (padded, -th * tw, -tw)
                if best is None or key < best[0]:
                    best = (key, th, tw)
    assert best is not None
    return best[1], best[2]


def registers_needed(cfg: TileConfig, spec: ConvSpec, itemsize: int) -> int:
    """Registers per thread ``cuda_tiled`` needs without spilling, roughly: ~64 for
    indices and addresses (Numba computes in 64 bits), two per accumulator word, and 56
    more for a 1x1 kernel (whose one-tap staging loops the compiler unrolls further).
    Calibrated on ptxas's reports; ``convlab info --cuda-static`` checks it."""
    taps = spec.kernel_size[0] * spec.kernel_size[1]
    return 64 + 2 * cfg.rk * cfg.rp * (itemsize // 4) + (56 if taps == 1 else 0)


def resident_warps(cfg: TileConfig, spec: ConvSpec, sms: int) -> float:
    """Warps per multiprocessor when the whole grid is spread over ``sms`` of them."""
    return math.prod(cfg.grid(spec)) * math.ceil(cfg.threads / 32) / sms


def choose_config(spec: ConvSpec, itemsize: int = 4, sms: int = 132,
                  smem_per_sm: int | None = None, fill_warps: float = FILL_WARPS_PER_SM,
                  fill_blocks: float = FILL_BLOCKS_PER_SM) -> TileConfig:
    """The tile configuration ``cuda_tiled`` uses on a GPU with ``sms`` multiprocessors
    (and ``smem_per_sm`` bytes of shared memory each, when known).  ``fill_warps`` and
    ``fill_blocks`` are the fill thresholds below (``fill_warps=16, fill_blocks=0`` is the
    rule before the H200 measurement, kept so gpu_check.py can time both in one run).

    Rules of thumb (``convlab info --cuda-static`` shows what the compiler made of them;
    scripts/gpu_check.py times alternatives on a real card):

    * pixel tile: :func:`pixel_tile` (ResNet's 56, 28, 14, 7 are multiples of 7,
      so th = 7 or 14 fits them exactly);
    * register blocking: the first of :data:`BLOCKINGS` (most outputs per thread first)
      whose grid still gives every multiprocessor :data:`FILL_WARPS_PER_SM` warps and
      :data:`FILL_BLOCKS_PER_SM` blocks (the module docstring says why so few: measured)
      and whose accumulators fit the registers left per thread when
      :data:`MIN_WARPS_PER_SM` warps share a multiprocessor (:func:`registers_needed`,
      :func:`convlab.occupancy.register_cap`), as do their tiles in shared memory
      (given ``smem_per_sm``: a T4 has 64 KB); a layer too small for any gets the
      blocking with the most warps;
    * ck: 8 input channels per step (fewer when the group has fewer, or when
      shared memory would overflow).
    """
    from ..occupancy import min_blocks, register_cap

    kg, cg = spec.out_channels // spec.groups, spec.in_channels // spec.groups
    th, tw = pixel_tile(spec.out_height, spec.out_width)
    ck = max(1, min(8, cg))
    # (fits its registers, warps) of the best so far: the first that fits and fills
    # the GPU wins; else the one that fits with the most warps; else the least short
    best: tuple[tuple[int, float], TileConfig] | None = None
    for tk, rk, rp in BLOCKINGS:
        tk = min(tk, _pow2_at_least(kg, 64))  # few channels per group: a smaller tile
        cand = TileConfig(tk, min(rk, tk), th, tw, rp, ck)
        if not 64 <= cand.threads <= MAX_THREADS or (th * tw) % rp:
            continue
        spare = min(0, register_cap(cand.threads, MIN_WARPS_PER_SM)
                    - registers_needed(cand, spec, itemsize))
        if smem_per_sm and min_blocks(cand.threads, MIN_WARPS_PER_SM) * (
                cand.shared_bytes(spec, itemsize) + SMEM_RESERVED) > smem_per_sm:
            spare -= 1  # these warps would not fit in shared memory
        warps = resident_warps(cand, spec, sms)
        if spare == 0 and warps >= fill_warps and (
                math.prod(cand.grid(spec)) >= fill_blocks * sms):
            best = ((spare, warps), cand)
            break
        if best is None or (spare, warps) > best[0]:
            best = ((spare, warps), cand)
    cfg = best[1] if best is not None else TileConfig(8, 1, th, tw, 1, ck)
    while cfg.problem(spec, itemsize) and cfg.ck > 1:
        cfg = cfg._replace(ck=cfg.ck // 2)
    while cfg.problem(spec, itemsize) and cfg.tk > 8:
        cfg = cfg._replace(tk=cfg.tk // 2, rk=min(cfg.rk, cfg.tk // 2))
    while cfg.problem(spec, itemsize) and cfg.th > 1:  # a huge window: smaller tiles
        cfg = cfg._replace(th=cfg.th // 2, rp=1)
    while cfg.problem(spec, itemsize) and cfg.tw > 1:
        cfg = cfg._replace(tw=cfg.tw // 2, rp=1)
    return cfg


def default_config(spec: ConvSpec, itemsize: int = 4) -> TileConfig:
    """The config ``conv2d(algo='cuda_tiled')`` runs: tiny tiles on the simulator,
    :func:`choose_config` for the current GPU otherwise."""
    if is_simulator():
        cfg = SIM_CONFIG
        while cfg.problem(spec, itemsize) and cfg.ck > 1:
            cfg = cfg._replace(ck=cfg.ck // 2)
        return cfg
    return choose_config(spec, itemsize, _multiprocessors(), _shared_per_sm())


def global_loads(spec: ConvSpec, algo: str = "cuda_tiled",
                 config: TileConfig | None = None) -> dict[str, int]:
    """Count the elements each kernel reads from global memory (no caches assumed).

    ``cuda_naive`` reads an input and a weight per multiply-add (taps that fall
    in the zero padding are skipped, but counted here: an upper bound).
    ``cuda_tiled`` reads, per block and per chunk of ``ck`` channels, one patch
    and one weight tile (zeros for padding are counted: the count is what is
    staged).  ``compulsory`` is reading each input and weight exactly once.
    """
    n, k, ho, wo = spec.batched_output_shape
    cg, (kh, kw) = spec.in_channels // spec.groups, spec.kernel_size
    compulsory = {"input": spec.batch * spec.in_channels * spec.height * spec.width,
                  "weight": k * cg * kh * kw}
    if algo == "compulsory":
        counts = compulsory
    elif algo == "cuda_naive":
        macs = spec.macs()
        counts = {"input": macs, "weight": macs}
    elif algo == "cuda_tiled":
        cfg = config or choose_config(spec)
        gx, gy, gz = cfg.grid(spec)
        chunks = math.ceil(cg / cfg.ck)
        ph, pw = cfg.patch(spec)
        counts = {"input": gx * gy * gz * chunks * cfg.ck * ph * pw,
                  "weight": gx * gy * gz * chunks * cfg.tk * cfg.ck * kh * kw}
    else:
        raise ValueError(f"global_loads knows 'cuda_naive', 'cuda_tiled' and 'compulsory', "
                         f"not {algo!r}")
    return {**counts, "total": counts["input"] + counts["weight"]}


# ----------------------------------------------------------------- device code (lazy)
@functools.cache
def _device() -> ModuleType:
    """The device code (``_cuda_device.py``), imported on first use: importing
    ``numba.cuda`` costs about a second, and most users never launch a kernel."""
    from . import _cuda_device

    return _cuda_device


def _naive_kernel() -> Any:
    """The compiled ``cuda_naive`` kernel (launch: ``[blocks, threads](x, w, b, out, sh,
    sw, top, left, dh, dw)``)."""
    return _device().naive_kernel()


def _tiled_kernel(dtype: str, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                  cfg: TileConfig) -> tuple[Any, int]:
    """The ``cuda_tiled`` kernel for these compile-time constants and its threads per
    block (launch: ``[cfg.grid(spec), threads](x, w, b, out, top, left)``)."""
    return _device().tiled_kernel(dtype, kh, kw, sh, sw, dh, dw, cfg)


# ----------------------------------------------------------------- device-array entry points
def _check_device_args(x: Any, weight: Any, bias: Any, spec: ConvSpec, out: Any) -> None:
    expect: dict[str, tuple[Any, tuple[int, ...]]] = {
        "x": (x, (spec.batch, spec.in_channels, spec.height, spec.width)),
        "weight": (weight, spec.weight_shape)}
    if bias is not None:
        expect["bias"] = (bias, spec.bias_shape)
    if out is not None:
        expect["out"] = (out, spec.batched_output_shape)
    for name, (arr, shape) in expect.items():
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(arr.shape)}, the spec expects {shape}")
        if np.dtype(arr.dtype) != np.dtype(x.dtype) or np.dtype(x.dtype) not in (
                np.float32, np.float64):
            raise TypeError(f"{name} has dtype {arr.dtype}; all arrays must be float32 or all "
                            "float64")
        if not arr.is_c_contiguous():
            raise ValueError(f"{name} must be C-contiguous")
    if spec.padding_mode != "zeros":
        raise ValueError("device kernels pad with zeros only; pad the input first "
                         "(convlab.functional.prepare does)")


Launch = Callable[[Any, Any, Any, Any, Any], None]


def _naive_launch(spec: ConvSpec, dtype: Any) -> tuple[Launch, str]:
    """Everything about a ``cuda_naive`` launch that does not depend on the data,
    decided once: (launch(x, w, b, out, stream), a note)."""
    total = math.prod(spec.batched_output_shape)
    threads = 32 if is_simulator() else THREADS_NAIVE
    blocks = max(1, math.ceil(total / threads))
    kern = _naive_kernel()
    (sh, sw), (dh, dw), (top, _, left, _) = spec.stride, spec.dilation, spec.padding

    def launch(x: Any, w: Any, b: Any, out: Any, stream: Any) -> None:
        if total:  # a grid of 0 blocks is a launch error on a GPU
            kern[blocks, threads, stream](x, w, b, out, sh, sw, top, left, dh, dw)

    return launch, f"{blocks} blocks x {threads} threads"


def _tiled_launch(spec: ConvSpec, dtype: Any,
                  config: TileConfig | None = None) -> tuple[Launch, str]:
    """The same for ``cuda_tiled``: tiles chosen (:func:`default_config` unless
    ``config``), checked and compiled once."""
    itemsize = np.dtype(dtype).itemsize
    cfg = TileConfig(*config) if config is not None else default_config(spec, itemsize)
    why = cfg.problem(spec, itemsize)
    if why is not None:
        raise UnsupportedSpecError(f"cuda_tiled {why}")
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    kern, threads = _tiled_kernel(np.dtype(dtype).name, kh, kw, sh, sw, dh, dw, cfg)
    grid, (top, _, left, _) = cfg.grid(spec), spec.padding
    empty = math.prod(spec.batched_output_shape) == 0

    def launch(x: Any, w: Any, b: Any, out: Any, stream: Any) -> None:
        if not empty:  # a grid with a zero dimension is a launch error on a GPU
            kern[grid, threads, stream](x, w, b, out, top, left)

    return launch, f"config {tuple(cfg)}"


def _launch_on_device(make: Callable[..., tuple[Launch, str]], x: Any, weight: Any, bias: Any,
                      spec: ConvSpec, out: Any, stream: Any, **options: Any) -> Any:
    from numba import cuda

    _check_device_args(x, weight, bias, spec, out)
    launch, _ = make(spec, x.dtype, **options)
    if bias is None:  # the kernels always add a bias: zeros cost one add per output
        bias = cuda.to_device(np.zeros(spec.out_channels, dtype=x.dtype), stream=stream)
    if out is None:
        out = cuda.device_array(spec.batched_output_shape, dtype=x.dtype, stream=stream)
    launch(x, weight, bias, out, stream)
    return out


def naive_device(x: Any, weight: Any, bias: Any, spec: ConvSpec, out: Any = None,
                 stream: Any = 0) -> Any:
    """``cuda_naive`` on numba device arrays: nothing crosses the PCIe bus.

    ``x`` (N, C, H, W), ``weight`` (K, C/groups, kh, kw), ``bias`` (K,) or None, all
    C-contiguous of one dtype; ``out`` (N, K, Hout, Wout) is allocated if None.
    Returns ``out``.  The launch is asynchronous: synchronize (or copy) before reading.
    """
    return _launch_on_device(_naive_launch, x, weight, bias, spec, out, stream)


def tiled_device(x: Any, weight: Any, bias: Any, spec: ConvSpec, out: Any = None,
                 config: TileConfig | None = None, stream: Any = 0) -> Any:
    """``cuda_tiled`` on numba device arrays (see :func:`naive_device`).

    ``config`` overrides the tile sizes (default: :func:`default_config`).
    """
    return _launch_on_device(_tiled_launch, x, weight, bias, spec, out, stream, config=config)


def _place(make: Callable[..., tuple[Launch, str]]) -> Callable[..., Placed]:
    """The registry's ``place`` hook: copy the inputs to the GPU once, decide the launch
    once, and hand back a call that only launches (what the benchmark times)."""

    def place(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
              spec: ConvSpec) -> Placed:
        from numba import cuda

        launch, note = make(spec, x.dtype)
        start = time.perf_counter()
        xd, wd = cuda.to_device(x), cuda.to_device(weight)
        bd = cuda.to_device(np.zeros(spec.out_channels, x.dtype) if bias is None else bias)
        out = cuda.device_array(spec.batched_output_shape, dtype=x.dtype)
        cuda.synchronize()
        copy_in = time.perf_counter() - start

        def call() -> Any:
            launch(xd, wd, bd, out, 0)
            return out

        return Placed(call, lambda o: o.copy_to_host(), copy_in, note)

    return place


def _tiled_supports(spec: ConvSpec) -> str | None:
    """The spec-only limits of cuda_tiled, at float32 sizes (a float64 run that would
    overflow shared memory is refused by :func:`tiled_device`, with the reason)."""
    if cuda_unavailable() is not None:
        return None  # availability is reported first, by the registry
    return default_config(spec, 4).problem(spec, 4)


def _numpy_path(place: Callable[..., Placed], x: np.ndarray, weight: np.ndarray,
                bias: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
    placed = place(x, weight, bias, spec)
    return placed.fetch(placed.call())


_place_naive, _place_tiled = _place(_naive_launch), _place(_tiled_launch)


@register("cuda_naive", description="numba.cuda, one thread per output element",
          device="cuda", available=cuda_unavailable, rtol=1e-5, place=_place_naive,
          nonfinite=NonFinite.SKIPS_PADDING, ladder=10)
def conv2d_cuda_naive(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                      spec: ConvSpec) -> np.ndarray:
    return _numpy_path(_place_naive, x, weight, bias, spec)


@register("cuda_tiled", description="numba.cuda, shared-memory tiles + register blocking",
          device="cuda", available=cuda_unavailable, supports=_tiled_supports, rtol=1e-5,
          place=_place_tiled, ladder=11)
def conv2d_cuda_tiled(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                      spec: ConvSpec) -> np.ndarray:
    return _numpy_path(_place_tiled, x, weight, bias, spec)
