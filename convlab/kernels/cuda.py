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

Timing: :func:`time_on_gpu` (CUDA events; transfers in and out timed apart from
the kernel; PyTorch/cuDNN as the rival).  Sources: NVIDIA's CUDA C++
Programming Guide (shared memory, coalescing, bank conflicts); Chetlur et al.
2014, "cuDNN: efficient primitives for deep learning" (arXiv 1410.0759);
V. Volkov, "Better performance at lower occupancy" (GTC 2010) for register
blocking.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from ..shapes import ConvSpec
from .registry import UnsupportedSpecError, register

THREADS_NAIVE = 256  # threads per block of cuda_naive on a GPU (32 on the simulator)
SHARED_LIMIT = 48 * 1024  # bytes of static shared memory one block may declare
MAX_GRID_YZ = 65535  # CUDA's limit on gridDim.y and gridDim.z


# ----------------------------------------------------------------- availability
# ``numba.cuda``, imported on first use (it costs ~1 s and is never needed on import).
# A module global, not a local: the simulator runs a kernel by swapping the
# globals that hold numba.cuda for its fake per-thread module.
cuda: Any = None


def _cuda() -> Any:
    global cuda
    if cuda is None:
        from numba import cuda as module

        cuda = module
    return cuda


@functools.lru_cache(maxsize=1)
def status() -> str:
    """'gpu: NAME', 'simulator (...)' or 'missing: how to get it' (cached)."""
    from ..system import cuda_status

    return cuda_status()


def is_simulator() -> bool:
    return status().startswith("simulator")


def cuda_unavailable() -> str | None:
    """None when CUDA kernels can run here (a GPU or the simulator), else how to get them."""
    state = status()
    if state.startswith(("gpu", "simulator")):
        return None
    return state.removeprefix("missing: ")


@functools.lru_cache(maxsize=1)
def _multiprocessors() -> int:
    """Streaming multiprocessors of the current GPU (a nominal 132 on the simulator)."""
    if is_simulator():
        return 132
    return int(_cuda().get_current_device().MULTIPROCESSOR_COUNT)


# ----------------------------------------------------------------- tile configuration
class TileConfig(NamedTuple):
    """How ``cuda_tiled`` cuts the work: the block and per-thread tiles."""

    tk: int = 64  # output channels per block
    rk: int = 8  # output channels per thread (register blocking)
    th: int = 8  # output rows per block
    tw: int = 16  # output columns per block
    rp: int = 4  # output pixels per thread (register blocking)
    ck: int = 8  # input channels staged in shared memory per step

    @property
    def threads(self) -> int:
        return (self.tk // self.rk) * (self.th * self.tw // self.rp)

    def patch(self, spec: ConvSpec) -> tuple[int, int]:
        """Rows and columns of the input patch one block stages: tile + halo."""
        (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
        return (self.th - 1) * sh + (kh - 1) * dh + 1, (self.tw - 1) * sw + (kw - 1) * dw + 1

    def shared_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        ph, pw = self.patch(spec)
        kh, kw = spec.kernel_size
        # weights stored (ck*kh*kw, tk + 1): the +1 keeps a column's elements in
        # different banks, so the transposing store is free of bank conflicts
        return itemsize * (self.ck * ph * pw + self.ck * kh * kw * (self.tk + 1))

    def grid(self, spec: ConvSpec) -> tuple[int, int, int]:
        kg = spec.out_channels // spec.groups
        tiles = math.ceil(spec.out_height / self.th) * math.ceil(spec.out_width / self.tw)
        return tiles, math.ceil(kg / self.tk) * spec.groups, spec.batch

    def problem(self, spec: ConvSpec, itemsize: int) -> str | None:
        """Why this config cannot run ``spec`` (None = it can)."""
        if min(self) < 1:
            return f"needs positive tile sizes, got {self}"
        if self.tk % self.rk or (self.th * self.tw) % self.rp:
            return f"needs tk % rk == 0 and th*tw % rp == 0, got {self}"
        if not 1 <= self.threads <= 1024:
            return f"needs 1..1024 threads per block, got {self.threads} for {self}"
        need = self.shared_bytes(spec, itemsize)
        if need > SHARED_LIMIT:
            return (f"needs {need:,} bytes of shared memory for {self} (limit "
                    f"{SHARED_LIMIT:,}): the kernel window or stride is too large")
        _, gy, gz = self.grid(spec)
        if gy > MAX_GRID_YZ or gz > MAX_GRID_YZ:
            return (f"needs batch <= {MAX_GRID_YZ} and ceil(out_channels/groups/{self.tk})"
                    f"*groups <= {MAX_GRID_YZ}")
        return None


# Tiny tiles for the simulator, where every thread is a Python thread: 16 threads
# per block, yet ragged edges, several channel tiles and several chunks still occur.
SIM_CONFIG = TileConfig(tk=4, rk=2, th=4, tw=4, rp=2, ck=2)


def _pow2_at_least(n: int, cap: int) -> int:
    p = 1
    while p < n and p < cap:
        p *= 2
    return p


# (tk, rk, rp) from the most register blocking to the least: the first that
# still gives every multiprocessor a block (and >= 64 threads a block) wins.
BLOCKINGS = ((64, 8, 4), (32, 8, 4), (32, 4, 4), (16, 4, 4), (16, 4, 2), (16, 2, 2),
             (8, 2, 2), (8, 2, 1))


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


def choose_config(spec: ConvSpec, itemsize: int = 4, sms: int = 132) -> TileConfig:
    """The tile configuration ``cuda_tiled`` uses on a GPU with ``sms`` multiprocessors.

    Rules of thumb (scripts/gpu_check.py sweeps alternatives on a real card):

    * pixel tile: :func:`pixel_tile` (ResNet's 56, 28, 14, 7 are multiples of 7,
      so th = 7 or 14 fits them exactly);
    * register blocking: the first of :data:`BLOCKINGS` (most outputs per thread
      first: 8 channels x 4 pixels = 32 accumulators) that still makes at least
      one block per multiprocessor, so none idles on a small layer;
    * ck: 8 input channels per step (fewer when the group has fewer, or when
      shared memory would overflow).
    """
    kg, cg = spec.out_channels // spec.groups, spec.in_channels // spec.groups
    th, tw = pixel_tile(spec.out_height, spec.out_width)
    ck = max(1, min(8, cg))
    cfg = None
    for tk, rk, rp in BLOCKINGS:
        tk = min(tk, _pow2_at_least(kg, 64))  # few channels per group: a smaller tile
        rk = min(rk, tk)
        while rp > 1 and (tk // rk) * (th * tw // rp) < 64:
            rp //= 2
        cfg = TileConfig(tk, rk, th, tw, rp, ck)
        gx, gy, gz = cfg.grid(spec)
        if gx * gy * gz >= sms and cfg.threads >= 64:
            break
    assert cfg is not None
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
    return choose_config(spec, itemsize, _multiprocessors())


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


# ----------------------------------------------------------------- kernels (lazy)
@functools.lru_cache(maxsize=1)
def _naive_kernel() -> Any:
    _cuda()

    @cuda.jit
    def naive(x, w, b, out, sh, sw, top, left, dh, dw):
        idx = cuda.grid(1)
        n_batch, c_in, height, width = x.shape
        k_out, cg, kh, kw = w.shape
        _, _, out_h, out_w = out.shape
        if idx >= n_batch * k_out * out_h * out_w:
            return  # a spare thread of the last block (no syncthreads here: returning is safe)
        # j fastest: neighbouring threads write neighbouring outputs (coalesced)
        j = idx % out_w
        rest = idx // out_w
        i = rest % out_h
        rest //= out_h
        k = rest % k_out
        n = rest // k_out
        c0 = (k // (k_out // (c_in // cg))) * cg  # first input channel of k's group
        acc = b[k]
        for c in range(cg):
            for p in range(kh):
                y = i * sh + p * dh - top
                if y >= 0 and y < height:  # zero padding: a tap outside reads nothing
                    for q in range(kw):
                        xx = j * sw + q * dw - left
                        if xx >= 0 and xx < width:
                            acc += x[n, c0 + c, y, xx] * w[k, c, p, q]
        out[n, k, i, j] = acc

    return naive


@functools.cache
def _tiled_kernel(dtype: str, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                  cfg: TileConfig) -> Any:
    """Compile-time constants in, a kernel out (cached per combination)."""
    _cuda()
    DT = np.dtype(dtype).type
    TK, RK, TH, TW, RP, CK = cfg
    PT = TH * TW // RP  # threads along pixels; a thread's pixels are PT apart
    NT = (TK // RK) * PT  # threads per block
    PH, PW = (TH - 1) * sh + (kh - 1) * dh + 1, (TW - 1) * sw + (kw - 1) * dw + 1
    PATCH = PH * PW
    XS = CK * PATCH  # staged input: (ck, ph, pw), flat
    KHW = kh * kw
    WROWS = CK * KHW
    WLD = TK + 1  # staged weights: (ck*kh*kw, tk+1), flat; +1 avoids bank conflicts
    WS = WROWS * WLD
    KH, KW, SH, SW, DH, DW = kh, kw, sh, sw, dh, dw
    U = np.uint64

    @cuda.jit
    def tiled(x, w, b, out, top, left):
        _, c_in, height, width = x.shape
        k_out, cg, _, _ = w.shape
        _, _, out_h, out_w = out.shape
        kg = k_out // (c_in // cg)
        tiles_w = (out_w + TW - 1) // TW
        k_tiles = (kg + TK - 1) // TK
        oy0 = (cuda.blockIdx.x // tiles_w) * TH  # the block's first output row, column
        ox0 = (cuda.blockIdx.x % tiles_w) * TW
        g = cuda.blockIdx.y // k_tiles  # group
        kb = (cuda.blockIdx.y % k_tiles) * TK  # first output channel, inside the group
        n = cuda.blockIdx.z
        tid = cuda.threadIdx.x
        tp = tid % PT  # which pixels (a warp spans neighbouring pixels: coalesced stores)
        tk = tid // PT  # which channels (a warp shares them: weight reads are broadcasts)

        x_s = cuda.shared.array(XS, DT)
        w_s = cuda.shared.array(WS, DT)
        acc = cuda.local.array((RK, RP), DT)  # constant sizes: these live in registers
        wr = cuda.local.array(RK, DT)
        xr = cuda.local.array(RP, DT)
        xoff = cuda.local.array(RP, np.uint64)
        wtk = U(tk * RK)
        for rp in range(RP):
            pix = tp + rp * PT
            xoff[rp] = (pix // TW) * SH * PW + (pix % TW) * SW  # its window's corner in x_s
        for rk in range(RK):
            kk = kb + tk * RK + rk
            bias = b[g * kg + kk] if kk < kg else DT(0)
            for rp in range(RP):
                acc[rk, rp] = bias  # fused bias: the sum starts at it

        y0 = oy0 * SH - top  # input row, column of the patch's corner (may be < 0: padding)
        x0 = ox0 * SW - left
        for c0 in range(0, cg, CK):  # the same trip count for every thread of the block
            # 1. stage the patch: consecutive threads, consecutive columns (coalesced)
            for e in range(tid, XS, NT):
                c = e // PATCH
                r = e - c * PATCH
                py = r // PW
                yy = y0 + py
                xx = x0 + r - py * PW
                v = DT(0)
                if c0 + c < cg and yy >= 0 and yy < height and xx >= 0 and xx < width:
                    v = x[n, g * cg + c0 + c, yy, xx]
                x_s[e] = v
            # ... and the weights w[k, c0:c0+CK, :, :], a contiguous run per k, transposed
            for e in range(tid, TK * WROWS, NT):
                k = e // WROWS
                r = e - k * WROWS
                c = r // KHW
                t = r - c * KHW
                v = DT(0)
                if kb + k < kg and c0 + c < cg:
                    v = w[g * kg + kb + k, c0 + c, t // KW, t % KW]
                w_s[r * WLD + k] = v
            cuda.syncthreads()  # 2. the tile is complete before anyone reads it
            # 3. RK x RP multiply-adds per RK + RP shared-memory loads
            # (unsigned offsets: a signed index costs a compare-and-select per load,
            # Numba's support for negative indices, which these never are)
            for c in range(CK):
                for p in range(KH):
                    for q in range(KW):
                        wrow = U(((c * KH + p) * KW + q) * WLD) + wtk
                        xb = U(c * PATCH + p * DH * PW + q * DW)
                        for rk in range(RK):
                            wr[rk] = w_s[wrow + U(rk)]
                        for rp in range(RP):
                            xr[rp] = x_s[xb + xoff[rp]]
                        for rk in range(RK):
                            for rp in range(RP):
                                acc[rk, rp] += wr[rk] * xr[rp]
            cuda.syncthreads()  # 4. everyone is done reading before the next chunk lands

        for rk in range(RK):  # only now may a thread skip work: no barrier follows
            kk = kb + tk * RK + rk
            if kk < kg:
                for rp in range(RP):
                    pix = tp + rp * PT
                    oy = oy0 + pix // TW
                    ox = ox0 + pix % TW
                    if oy < out_h and ox < out_w:
                        out[n, g * kg + kk, oy, ox] = acc[rk, rp]

    return tiled, NT


# ----------------------------------------------------------------- device-array entry points
def _check_device_args(x: Any, weight: Any, bias: Any, spec: ConvSpec, out: Any) -> None:
    expect = {"x": (x, (spec.batch, spec.in_channels, spec.height, spec.width)),
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


def _device_inputs(x: Any, weight: Any, bias: Any, spec: ConvSpec, out: Any,
                   stream: Any) -> tuple[Any, Any]:
    cuda = _cuda()
    _check_device_args(x, weight, bias, spec, out)
    if bias is None:  # the kernels always add a bias: zeros cost one add per output
        bias = cuda.to_device(np.zeros(spec.out_channels, dtype=x.dtype), stream=stream)
    if out is None:
        out = cuda.device_array(spec.batched_output_shape, dtype=x.dtype, stream=stream)
    return bias, out


def naive_device(x: Any, weight: Any, bias: Any, spec: ConvSpec, out: Any = None,
                 stream: Any = 0) -> Any:
    """``cuda_naive`` on numba device arrays: nothing crosses the PCIe bus.

    ``x`` (N, C, H, W), ``weight`` (K, C/groups, kh, kw), ``bias`` (K,) or None, all
    C-contiguous of one dtype; ``out`` (N, K, Hout, Wout) is allocated if None.
    Returns ``out``.  The launch is asynchronous: synchronize (or copy) before reading.
    """
    bias, out = _device_inputs(x, weight, bias, spec, out, stream)
    total = int(np.prod(spec.batched_output_shape))
    threads = 32 if is_simulator() else THREADS_NAIVE
    blocks = max(1, math.ceil(total / threads))
    _naive_kernel()[blocks, threads, stream](x, weight, bias, out, spec.stride[0],
                                             spec.stride[1], spec.padding[0], spec.padding[2],
                                             spec.dilation[0], spec.dilation[1])
    return out


def tiled_device(x: Any, weight: Any, bias: Any, spec: ConvSpec, out: Any = None,
                 config: TileConfig | None = None, stream: Any = 0) -> Any:
    """``cuda_tiled`` on numba device arrays (see :func:`naive_device`).

    ``config`` overrides the tile sizes (default: :func:`default_config`).
    """
    itemsize = np.dtype(x.dtype).itemsize
    cfg = TileConfig(*config) if config is not None else default_config(spec, itemsize)
    why = cfg.problem(spec, itemsize)
    if why is not None:
        raise UnsupportedSpecError(f"cuda_tiled {why}")
    bias, out = _device_inputs(x, weight, bias, spec, out, stream)
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    kern, threads = _tiled_kernel(np.dtype(x.dtype).name, kh, kw, sh, sw, dh, dw, cfg)
    kern[cfg.grid(spec), threads, stream](x, weight, bias, out, spec.padding[0],
                                          spec.padding[2])
    return out


DEVICE_ENTRIES = {"cuda_naive": naive_device, "cuda_tiled": tiled_device}


def _tiled_supports(spec: ConvSpec) -> str | None:
    """The spec-only limits of cuda_tiled, at float32 sizes (a float64 run that would
    overflow shared memory is refused by :func:`tiled_device`, with the reason)."""
    if cuda_unavailable() is not None:
        return None  # availability is reported first, by the registry
    return default_config(spec, 4).problem(spec, 4)


def _numpy_path(entry: Any, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                spec: ConvSpec) -> np.ndarray:
    cuda = _cuda()
    xd, wd = cuda.to_device(x), cuda.to_device(weight)
    bd = None if bias is None else cuda.to_device(bias)
    return entry(xd, wd, bd, spec).copy_to_host()


@register("cuda_naive", description="numba.cuda, one thread per output element",
          device="cuda", available=cuda_unavailable, rtol=1e-5)
def conv2d_cuda_naive(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                      spec: ConvSpec) -> np.ndarray:
    return _numpy_path(naive_device, x, weight, bias, spec)


@register("cuda_tiled", description="numba.cuda, shared-memory tiles + register blocking",
          device="cuda", available=cuda_unavailable, supports=_tiled_supports, rtol=1e-5)
def conv2d_cuda_tiled(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                      spec: ConvSpec) -> np.ndarray:
    return _numpy_path(tiled_device, x, weight, bias, spec)


# ----------------------------------------------------------------- timing on the GPU
@dataclass(frozen=True)
class GpuTiming:
    """One provider's GPU timing of one convolution (milliseconds; GFLOP/s from the spec)."""

    name: str
    kernel_ms: float  # median over repeats, CUDA events around the kernel(s) alone
    kernel_ms_min: float
    kernel_ms_max: float
    h2d_ms: float  # copying x, weight (and bias) to the device
    d2h_ms: float  # copying the output back
    first_call_s: float  # wall time of the first call: compilation included
    gflops: float  # from ConvSpec.flops() and kernel_ms
    repeats: int
    launches_per_sample: int
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RIVALS = ("torch_fp32", "torch_default")


def torch_cuda_unavailable() -> str | None:
    """None when torch with a CUDA GPU is importable here, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


def _events_ms(run: Any, record: Any, elapsed: Any, sync: Any, repeats: int,
               target_ms: float = 1.0) -> tuple[list[float], int]:
    """Time ``run()`` with events: launches back to back, so CPU launch overhead
    (tens of microseconds in Python) is hidden behind the GPU's work."""
    start, stop = record(), record()  # warm-up estimate: one launch
    run()
    stop2 = record()
    sync(stop2)
    one = max(elapsed(start, stop2) - elapsed(start, stop), 1e-3)
    inner = max(1, min(100, math.ceil(target_ms / one)))
    samples = []
    for _ in range(repeats):
        a = record()
        for _ in range(inner):
            run()
        b = record()
        sync(b)
        samples.append(elapsed(a, b) / inner)
    return samples, inner


class _WallEvent:
    """A CUDA-event look-alike on the wall clock, for the (synchronous) simulator."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, later: _WallEvent) -> float:
        return (later.t - self.t) * 1e3


def time_on_gpu(algo: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                spec: ConvSpec, *, repeats: int = 10, config: TileConfig | None = None,
                check: bool = True, expected: np.ndarray | None = None) -> GpuTiming:
    """Time ``algo`` on the GPU for arrays already through :func:`convlab.functional.prepare`.

    ``algo`` is ``'cuda_naive'``, ``'cuda_tiled'`` (``config`` picks its tiles),
    ``'torch_fp32'`` (cuDNN in float32 with TF32 off: the like-for-like rival) or
    ``'torch_default'`` (torch's defaults: cuDNN may use TF32 tensor cores, with
    ~1e-3 relative error).  Returns a :class:`GpuTiming`: the first call (with
    compilation) timed alone by the wall clock, then ``repeats`` samples by CUDA
    events, each the mean of enough back-to-back launches to last ~1 ms; the
    copies in (x, weight, bias) and out are timed apart.  With ``check``, the
    result is compared with the float64 oracle, or with ``expected`` (the oracle's
    output, computed once by a caller timing many providers); ValueError if wrong.
    Works on the simulator too (wall-clock numbers that mean nothing for a GPU).
    """
    if algo in RIVALS:
        return _time_torch(algo, x, weight, bias, spec, repeats, check, expected)
    if algo not in DEVICE_ENTRIES:
        raise ValueError(f"time_on_gpu times {sorted(DEVICE_ENTRIES) + list(RIVALS)}, "
                         f"not {algo!r}")
    why = cuda_unavailable()
    if why is not None:
        from .registry import KernelUnavailableError

        raise KernelUnavailableError(f"kernel {algo!r} is not available here: {why}")
    cuda = _cuda()
    entry = DEVICE_ENTRIES[algo]
    kwargs = {"config": config} if algo == "cuda_tiled" else {}

    sim = is_simulator()

    def record() -> Any:
        # the simulator's events time nothing (and warn): it runs synchronously, so
        # the wall clock measures the same thing there
        ev = _WallEvent() if sim else cuda.event(timing=True)
        ev.record()
        return ev

    def elapsed(a: Any, b: Any) -> float:
        return a.elapsed_time(b)

    def sync(ev: Any) -> None:
        ev.synchronize()

    a = record()
    xd, wd = cuda.to_device(x), cuda.to_device(weight)
    bd = cuda.to_device(bias if bias is not None else np.zeros(spec.out_channels, x.dtype))
    b = record()
    sync(b)
    h2d = elapsed(a, b)
    out = cuda.device_array(spec.batched_output_shape, dtype=x.dtype)
    t0 = time.perf_counter()
    entry(xd, wd, bd, spec, out, **kwargs)
    cuda.synchronize()
    first = time.perf_counter() - t0
    samples, inner = _events_ms(lambda: entry(xd, wd, bd, spec, out, **kwargs), record,
                                elapsed, sync, repeats)
    a = record()
    host = out.copy_to_host()
    b = record()
    sync(b)
    if check:
        _check_result(algo, host, x, weight, bias, spec, expected)
    cfg = (TileConfig(*config) if config else default_config(spec, x.dtype.itemsize))
    note = f"config {tuple(cfg)}" if algo == "cuda_tiled" else ""
    return _timing(algo, samples, inner, h2d, elapsed(a, b), first, spec, note)


def _timing(name: str, samples: list[float], inner: int, h2d: float, d2h: float,
            first: float, spec: ConvSpec, note: str) -> GpuTiming:
    med = statistics.median(samples)
    return GpuTiming(name, med, min(samples), max(samples), h2d, d2h, first,
                     spec.flops() / (med * 1e-3) / 1e9 if med > 0 else float("inf"),
                     len(samples), inner, note)


def _check_result(name: str, out: np.ndarray, x: np.ndarray, weight: np.ndarray,
                  bias: np.ndarray | None, spec: ConvSpec,
                  expected: np.ndarray | None = None) -> None:
    from ..reference import compare, conv2d_reference
    from .registry import KERNELS

    if expected is None:
        expected = conv2d_reference(x, weight, bias, spec)
    report = compare(out, expected, KERNELS["cuda_naive"].tolerance(spec, x.dtype))
    if not report.ok:
        raise ValueError(f"{name} gave a wrong result: {report} on {spec.describe()}")


def _time_torch(algo: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                spec: ConvSpec, repeats: int, check: bool,
                expected: np.ndarray | None) -> GpuTiming:
    why = torch_cuda_unavailable()
    if why is not None:
        from .registry import KernelUnavailableError

        raise KernelUnavailableError(f"{algo} needs torch with CUDA: {why}")
    import torch
    import torch.nn.functional as F

    top, bottom, left, right = spec.padding
    symmetric = top == bottom and left == right
    if not symmetric:  # torch takes symmetric padding only: pad first (outside the timing)
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    pad = (top, left) if symmetric else (0, 0)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    try:
        if algo == "torch_fp32":
            cudnn.allow_tf32 = matmul.allow_tf32 = False

        def record() -> Any:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev

        def elapsed(a: Any, b: Any) -> float:
            return a.elapsed_time(b)

        def sync(ev: Any) -> None:
            ev.synchronize()

        a = record()
        xt = torch.from_numpy(x).cuda()
        wt = torch.from_numpy(weight).cuda()
        bt = None if bias is None else torch.from_numpy(bias).cuda()
        b = record()
        sync(b)
        h2d = elapsed(a, b)

        def run() -> Any:
            return F.conv2d(xt, wt, bt, spec.stride, pad, spec.dilation, spec.groups)

        t0 = time.perf_counter()
        out = run()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        samples, inner = _events_ms(run, record, elapsed, sync, repeats)
        a = record()
        host = out.cpu().numpy()
        b = record()
        sync(b)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
    if check and algo == "torch_fp32":  # TF32 (10-bit mantissa) would fail float32's
        _check_result(algo, host, x, weight, bias,  # tolerance: only fp32 is checked
                      spec if symmetric else spec.explicitly_padded(), expected)
    note = ("cuDNN float32, TF32 off" if algo == "torch_fp32" else
            f"torch defaults (cudnn.allow_tf32={saved[0]})")
    return _timing(algo, samples, inner, h2d, elapsed(a, b), first, spec, note)
