"""FFT convolution: the convolution theorem, tile by tile.

The theorem.  A circular correlation of two length-T signals is a pointwise product of
their discrete Fourier transforms, one factor conjugated::

    y[i] = sum_p x[(i + p) mod T] w[p]   <=>   Y[f] = X[f] * conj(W[f])

(convlab, like PyTorch, computes a *correlation*: the kernel is not flipped.  This
file conjugates the filter's spectrum; flipping the filter and convolving would give
the same numbers with the outputs in another place.)  In 2-D the same holds with 2-D
transforms.  Summed over input channels, one output channel's spectrum is

    Y_k[f] = sum_c X_c[f] * conj(W_kc[f])      for every frequency f,

so the whole layer is one small complex matrix product *per frequency*:
``Y[f] (tiles x K) = X[f] (tiles x C) @ U[f] (C x K)`` with ``U = conj(W)``.  Its cost
hardly depends on the kernel size (only through the tiles: a wider kernel leaves fewer
valid outputs per tile), where direct convolution pays kh*kw multiply-adds per output.
That is the whole lesson of the ``kernels`` benchmark suite (notebook 11): which
algorithm wins depends on k.

Making it linear.  The theorem is *circular*: an output near the end of a transform
reads samples wrapped round from the start.  Zero padding stops that: a tile of T
input samples gives T - span + 1 correct outputs (span = d*(k-1) + 1, the dilated
kernel's extent); the last span - 1 outputs are wrapped and dropped.  That is
**overlap-save**: the input is cut into tiles of T samples that overlap by span - 1,
each tile's valid outputs are kept (the first T - span + 1 of it, for a correlation),
and nothing is ever added up across tiles.  (Overlap-add, the dual, cuts the input
into disjoint pieces, zero-pads each to T and adds the overlapping outputs.)  The
image's own zero padding ('same' etc.) and the ragged last tiles read zeros, written
by the gather, never a padded copy of the input.

Why tiles.  One transform over the whole image is fewest points, but the filter
spectrum then has Th x (Tw/2+1) values per (k, c) pair (69 MB for 64->64 at 64x64), and
the products read it from memory; small tiles transform more points (each tile
recomputes span - 1 rows and columns of its neighbours') but keep the spectrum small.
:func:`plan` picks the transform size (Th, Tw) per layer from a cost model,
:func:`cost_ns`, over every pair of fast FFT lengths (2^a 3^b 5^c) from the span up to
the whole padded image:

    time = (C + K) x tiles x (FFT_NS x P log2 P + FFT_CALL_NS)      transforms, P = Th Tw
         + tiles x bins x C/g x K x MAC_NS                          products
         + filter spectrum bytes x BYTE_NS (x passes)                 streamed once per pass
         + 2 kh x spectrum values x DFT_NS                          if it is not cached

The constants were fitted to single-thread CPU times on the 2-core EPYC (the model is
within ~15% of the measured time on nine layers, 3x3 to 7x7, 8 to 256 channels).  For
the ``kernels`` suite (64 -> 64 @56x56, batch 8) it picks 16x30 tiles at k=3, 18x32 at
k=5, 25x25 at k=7 and 45x45 at k=15 (uncached filter); with the filter cached it prefers
bigger tiles (fewer points, the spectrum is paid for once).

The pipeline, one Numba ``prange`` pass per stage over the tiles of one pass:

1. filter spectrum (``transform_weight``, cacheable): conj(DFT) of each filter zero-
   padded (and dilated: its taps spaced d apart) to Th x Tw.  Only kh x kw taps are
   non-zero, so a *pruned* DFT (two small products: kw taps -> Tw/2+1 column bins,
   then kh taps -> Th row bins) replaces the FFT of a mostly-zero frame and writes the
   per-frequency layout the products read.  ``Conv2d``'s weight cache keeps it;
2. forward FFTs: each job gathers one tile of some channels (zeros off the input),
   ``rfft2`` (a real signal's spectrum is symmetric: Th x (Tw/2+1) bins suffice), and
   scatters the bins frequency-major, channels contiguous;
3. products: per frequency, (tiles x C/g) @ (C/g x K/g) per group, complex, written
   out as real arithmetic on separate real and imaginary planes (so LLVM vectorises over
   the output channels), two tiles per pass over the filter values;
4. inverse FFTs: each job gathers one tile's bins for some output channels,
   ``irfft2``, and writes the first (Th - span_h + 1) x (Tw - span_w + 1) points plus the
   bias into the output.

Choices measured (single-thread CPU time, float32, 64 -> 64 @56x56, batch 8, unless
said otherwise):

* transforms: rocket-fft (NumPy's and SciPy's FFT, pocketfft, callable inside
  ``@njit``) lets each ``prange`` job transform its tile where it gathered it and
  scatter the bins while they are in cache.  The same pipeline on ``scipy.fft``
  (``rfft2`` of a strided view of all tiles, NumPy transposes to and from the
  per-frequency layout, batched complex ``matmul``) took 47-66 ms at k=7 against
  30-32 ms, and 126 against 59 ms at k=15: the two transposes and the crop were a
  third of its time.  ``scipy.fft``'s ``workers=2`` gave no speed-up on this box.
* products: BLAS ``cgemm`` per frequency, called from ``prange`` (Numba's ``np.dot``,
  single-threaded), ran at 3-32 GFLOP/s on random (tiles x 64) @ (64 x 64) products per
  frequency (tiles = 8 to 288, 144 to 2664 frequencies); the split-plane loop at
  30-72; NumPy's batched ``matmul`` outside Numba matched the loop (11 ms at k=7) but
  needs the interleaved layout (the transposes above) and its own thread pool.

Measured: ``convlab bench --suite kernels --kernels parallel,im2col,winograd_f4,fft,torch``
(float32, batch 8, 2 threads, 2-core EPYC; four runs while other jobs used the machine,
load 2-5, one of them with ``--settle 0.2``), fft's speed-up:

=====  ===========  ==========  =============
k      over torch   over im2col over parallel
=====  ===========  ==========  =============
3      0.53-0.82    2.3-2.9     0.47-0.68 (Winograd F(4,3) is fastest)
5      1.07-1.20    1.8-5.2     1.11-1.63
7      1.54-1.81    4.0-10      1.76-2.18
9      1.86-2.63    6.4-10      1.73-3.31
11     2.20-4.48    10-13       3.07-5.21
15     4.18-6.11    13-25       3.04-4.91
=====  ===========  ==========  =============

fft is the fastest convlab kernel from k = 5 on in all four.  In a quieter moment (best
of 3 calls, 2 threads) it took 16 ms at k=3 and 26 ms at k=7 (1 thread: 30 and 46 ms),
the filter spectrum 1-2 ms of it; the harness's medians on the busy box were 2-5x that,
for torch too.  With ``--weight-cache`` (as ``Conv2d`` runs it) it took 20-41 ms at
every k from 5 to 15.

Cost.  With P = Th Tw points and B = Th (Tw/2+1) bins per tile: (C + K) transforms of
O(P log P) and B x C/g x K complex multiply-adds (4 real each) per tile, against direct
convolution's kh kw x (Th-span+1)(Tw-span+1) x C/g x K real multiply-adds for the same
outputs: FFT wins when kh kw is large next to 4B / (outputs per tile).

Workspace: the spectra of one pass of tiles in and out (2 x B x tiles x (C + K) values,
at most ``PASS_BYTES``; bigger inputs run in several passes) and the filter spectrum
(2 x B x K x C/g values, kept under ``SPECTRUM_BYTES`` by the plan where any tile can:
it is the price of FFT convolution for wide layers).

Numerics.  Every output is a sum over the whole tile's spectrum, so rounding error is
relative to the tile's values, not to each output, and grows only with log2 of the
transform size.  Measured (``convlab.numerics.growth_study``, float32, N(0,1), worst
of 3 seeds): max error / max|out| 1.6e-7 .. 3.4e-7 as the kernel grows from 1x1 to
15x15, the image from 8x10 to 64x80 and the channels from 1 to 256 (and 2.4e-7 for any
tile from 8 to 320 points a side on a 300x300 image), where ``naive``'s grows with the
reduction to 2.1e-6 and F(4,3)'s reaches 1.1e-5.  ``rtol`` = 3e-6 is ``suggest_rtol``'s
2.6e-6 (10x the worst, at 576 products) rounded up.  Overflow comes sooner than in
direct convolution: a tile's zero-frequency bin is the sum of all its pixels.  Data far
from zero mean (a large constant plus small detail) rounds at the constant's scale.

NaN and Inf (``nonfinite``): a transform mixes every pixel of its tile, so one NaN or
Inf input pixel makes every output of each tile that reads it NaN, in all output
channels (overlap-save tiles overlap by span - 1, so a pixel may sit in several).  A
NaN or Inf weight makes its whole output channel NaN (the oracle also poisons the whole
channel for NaN; for Inf it gives Inf where FFT gives NaN).  ``algo="auto"`` passes over this
kernel for non-finite input.

Limits: stride 1 only (refused otherwise, with the reason: it computes every stride-1
output of a tile); any kernel size (rectangular too), padding, dilation, groups
(depthwise works, but its products are 1x1 and the transforms dominate; auto sends
depthwise layers to the ``depthwise`` kernel, ranked first), float32 and float64.
``algo="auto"``: see ``_auto_when``.

Source: the convolution theorem; overlap-save (Stockham 1966); FFT convolution for
CNNs: Mathieu, Henaff, LeCun, "Fast Training of Convolutional Networks through FFTs"
(ICLR 2014), Vasilache et al., "Fast Convolutional Nets With fbfft" (2015); tiles as
NNPACK does them (8x8 and 16x16).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy.fft as sfft  # inside @njit: rocket-fft's implementation (pocketfft, C++)
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import parallel_region
from .registry import NonFinite, register


# ---------------------------------------------------------------- the plan
def _smooth_sizes(limit: int) -> tuple[int, ...]:
    """Every 2^a 3^b 5^c up to ``limit``: the lengths pocketfft transforms fastest."""
    sizes = {1}
    for p in (2, 3, 5):
        for s in sorted(sizes):
            while s * p <= limit:
                s *= p
                sizes.add(s)
    return tuple(sorted(sizes))


MAX_TILE = 512  # the largest transform side a plan considers (unless the kernel is wider)
SIZES = _smooth_sizes(8 * MAX_TILE)
MIN_TILE = 8  # smaller transforms cost more per point than they save (measured)
# Cost model constants (nanoseconds, one thread; see plan()).
FFT_NS = 0.25  # per point per log2(points), forward or inverse, gather/scatter included
FFT_CALL_NS = 150.0  # per tile and channel transformed (call, copies, small-size overhead)
MAC_NS = 0.16  # per complex multiply-add of the per-frequency products
BYTE_NS = 0.08  # per byte of filter spectrum streamed from memory
DFT_NS = 0.09  # per real multiply-add of the filter's pruned DFT (uncached weight), faults incl.
# Workspace of one pass (the spectra of its tiles in and out), bounded so big inputs run
# in several passes of tiles, each reading the filter spectrum once.
PASS_BYTES = 64 * 2**20
# The filter spectrum (2 x bins x K x C/groups values) grows with the tile and with K x C:
# plans keep it under this (1024 -> 1024 channels at 9x9 tiles need 360 MiB: then the
# smallest spectrum is taken, and algo="auto" declines).
SPECTRUM_BYTES = 256 * 2**20


def _next_size(n: int) -> int:
    return next(s for s in SIZES if s >= n)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Plan:
    """How a layer is cut: transforms of ``tile`` = (Th, Tw) points, each giving
    ``step`` = (Th - span_h + 1, Tw - span_w + 1) outputs (overlap-save); ``tiles``
    tiles per image (rows, columns); ``per_pass`` tiles transformed per pass."""

    tile: tuple[int, int]
    step: tuple[int, int]
    tiles: tuple[int, int]
    per_pass: int
    cost_ns: float

    @property
    def bins(self) -> int:
        """Frequencies per tile: Th x (Tw//2 + 1) (a real signal's spectrum is symmetric)."""
        return self.tile[0] * (self.tile[1] // 2 + 1)


def _candidates(span: int, padded: int) -> list[int]:
    """Transform sizes for one axis: from the kernel's span (at least one output per
    tile) up to one tile covering the whole padded input (or MAX_TILE)."""
    lo = max(span, MIN_TILE)
    hi = max(_next_size(lo), min(_next_size(padded), MAX_TILE))
    return [s for s in SIZES if lo <= s <= hi]


def cost_ns(spec: ConvSpec, tile: tuple[int, int], cached: bool, itemsize: int = 4) -> float:
    """The cost model (nanoseconds on one thread): transforms + products + spectrum traffic.

    * transforms: (C + K) per tile (C forward, K inverse), each
      ``FFT_NS * P log2 P + FFT_CALL_NS`` for P = Th*Tw points;
    * products: tiles x bins x (C/groups) x K complex multiply-adds, ``MAC_NS`` each;
    * the filter spectrum (2 x bins x K x C/groups values) read once per pass, and when
      it is not cached also computed (2 kh multiply-adds per value, ``DFT_NS`` each).
    """
    (sh, sw), (th, tw) = spec.effective_kernel_size, tile
    tiles = spec.batch * _cdiv(spec.out_height, th - sh + 1) * _cdiv(spec.out_width, tw - sw + 1)
    points = th * tw
    bins = th * (tw // 2 + 1)
    cg = spec.in_channels // spec.groups
    kc = spec.out_channels * cg
    fft = tiles * (spec.in_channels + spec.out_channels) * (
        FFT_NS * points * math.log2(points) + FFT_CALL_NS)
    products = tiles * bins * kc * MAC_NS
    spectrum = 2 * bins * kc * itemsize
    passes = _cdiv(tiles, _per_pass(spec, tile, itemsize))
    cost = fft + products + passes * spectrum * BYTE_NS
    if not cached:  # the pruned DFT's second GEMM: 2 kh multiply-adds per spectrum value
        cost += spectrum // itemsize * 2 * spec.kernel_size[0] * DFT_NS
    return cost


def _per_pass(spec: ConvSpec, tile: tuple[int, int], itemsize: int) -> int:
    bins = tile[0] * (tile[1] // 2 + 1)
    per_tile = 2 * bins * (spec.in_channels + spec.out_channels) * itemsize
    return max(1, PASS_BYTES // per_tile)


def plan(spec: ConvSpec, cached: bool = False, itemsize: int = 4) -> Plan:
    """The tile size for ``spec``: the cheapest by :func:`cost_ns` over every pair of
    fast transform sizes from the kernel's span to the whole padded input."""
    return _plan(spec.batch, spec.in_channels, spec.out_channels, spec.groups,
                 spec.height, spec.width, spec.kernel_size, spec.dilation, spec.padding,
                 cached, itemsize)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _plan(n: int, c: int, k: int, groups: int, h: int, w: int, kernel: tuple[int, int],
          dilation: tuple[int, int], padding: tuple[int, int, int, int], cached: bool,
          itemsize: int) -> Plan:
    spec = ConvSpec(n, c, h, w, k, kernel, (1, 1), padding, dilation, groups)
    (sh, sw) = spec.effective_kernel_size
    sizes = [(th, tw) for th in _candidates(sh, spec.padded_height)
             for tw in _candidates(sw, spec.padded_width)]
    fits = [t for t in sizes if spectrum_bytes(spec, t, itemsize) <= SPECTRUM_BYTES]
    if not fits:  # too many channels for any tile: the smallest spectrum there is
        fits = [min(sizes, key=lambda t: spectrum_bytes(spec, t, itemsize))]
    tile = min(fits, key=lambda t: cost_ns(spec, t, cached, itemsize))
    step = (tile[0] - sh + 1, tile[1] - sw + 1)
    tiles = (_cdiv(spec.out_height, step[0]), _cdiv(spec.out_width, step[1]))
    return Plan(tile, step, tiles, _per_pass(spec, tile, itemsize),
                cost_ns(spec, tile, cached, itemsize))


def spectrum_bytes(spec: ConvSpec, tile: tuple[int, int], itemsize: int = 4) -> int:
    """Bytes of the filter spectrum for ``tile``: 2 x bins x K x C/groups values."""
    bins = tile[0] * (tile[1] // 2 + 1)
    return 2 * bins * spec.out_channels * (spec.in_channels // spec.groups) * itemsize


def multiplies(spec: ConvSpec, cached: bool = False) -> dict[str, int]:
    """Real multiplies of ``spec`` by FFT with its plan: ``products`` (4 per complex
    multiply-add, tiles x bins x C/g x K of them) and ``transforms`` (the radix-2 count
    of a real FFT, P log2 P for P points, for C forward and K inverse per tile; the
    filter's spectrum not counted: it is cached, or small beside them).  Direct
    convolution does ``spec.macs()``."""
    pl = plan(spec, cached)
    tiles = spec.batch * pl.tiles[0] * pl.tiles[1]
    points = pl.tile[0] * pl.tile[1]
    cg = spec.in_channels // spec.groups
    return {"products": 4 * tiles * pl.bins * cg * spec.out_channels,
            "transforms": int((spec.in_channels + spec.out_channels) * tiles * points
                              * math.log2(points))}


# ---------------------------------------------------------------- the filter's spectrum
def filter_spectrum(weight: np.ndarray, spec: ConvSpec, tile: tuple[int, int]) -> np.ndarray:
    """conj(DFT(w)) of every (k, c) filter, zero-padded (and dilated) to ``tile``, as the
    products read it: real and imaginary planes, (2, bins, groups, C/groups, K/groups).

    The filter has only kh x kw non-zero taps in a Th x Tw frame, so a pruned DFT (two
    small matrix products: along the rows, then down the columns) costs less than an
    FFT of the mostly-zero frame, and writes the per-frequency layout directly.  The
    conjugate (e^{+2 pi i ...}) turns the pointwise product into a correlation."""
    kout, cg, kh, kw = weight.shape
    groups, (dh, dw), (th, tw) = spec.groups, spec.dilation, tile
    kg = kout // groups
    # the twiddles e^{+2 pi i u p d / T}, exact index arithmetic (mod T) in float64
    eh = np.exp(2j * np.pi * (np.outer(np.arange(th), np.arange(kh) * dh) % th) / th)
    ew = np.exp(2j * np.pi * (np.outer(np.arange(tw // 2 + 1), np.arange(kw) * dw) % tw) / tw)
    dt = weight.dtype
    twr, m = tw // 2 + 1, kout * cg
    # 1. along the rows, kw taps -> Tw//2+1 column bins, for every (p, g, c, k) at once:
    #    z[p, re/im, v, :] = sum_q ew[v, q] wt[p, q, :], wt[p, q, g, c, k] = w[g*kg + k, c, p, q]
    wt = np.ascontiguousarray(weight.reshape(groups, kg, cg, kh, kw).transpose(3, 4, 0, 2, 1))
    e_rows = np.concatenate([ew.real, ew.imag]).astype(dt)  # (2 Twr, kw)
    # 2. down the columns, kh taps -> Th row bins: one real GEMM whose rows are
    #    (re/im, u) and whose columns are (v, g, c, k), i.e. u's layout (2, bins, ...);
    #    the complex product (a + ib)(zr + i zi) is spelt out over z's (p, re/im) rows
    e_cols = np.empty((2, th, kh, 2), dt)
    e_cols[0, :, :, 0], e_cols[0, :, :, 1] = eh.real, -eh.imag  # re: a zr - b zi
    e_cols[1, :, :, 0], e_cols[1, :, :, 1] = eh.imag, eh.real  # im: b zr + a zi
    z = np.empty((kh, 2 * twr, m), dt)
    u = np.empty((2 * th, twr * m), dt)
    with parallel_region():
        _pruned_dft(wt.reshape(kh, kw, m), e_rows, e_cols.reshape(2 * th, 2 * kh), z,
                    z.reshape(2 * kh, twr * m), u)
    return u.reshape(2, -1, groups, cg, kg)


class FilterSpectra:
    """The transformed weight (``transform_weight``): the filter's spectrum for each
    transform size used so far (a layer may see several input sizes; the spectrum
    depends on the tile, never on anything else of the input).  Keeps a private copy
    of the weight, so a spectrum computed later is the transform of the same bits."""

    KEEP = 4  # tile sizes remembered (each is 2 x bins x K x C/groups values)

    def __init__(self, weight: np.ndarray, spec: ConvSpec) -> None:
        self.weight = weight.copy()
        self.groups, self.dilation = spec.groups, spec.dilation
        self._spectra: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, spec: ConvSpec, tile: tuple[int, int]) -> np.ndarray:
        if (spec.groups, spec.dilation) != (self.groups, self.dilation):
            raise ValueError(f"this filter spectrum was made for groups={self.groups}, "
                             f"dilation={self.dilation}; got groups={spec.groups}, "
                             f"dilation={spec.dilation}")
        with self._lock:
            found = self._spectra.get(tile)
        if found is None:
            found = filter_spectrum(self.weight, spec, tile)
            with self._lock:
                if len(self._spectra) >= self.KEEP:
                    self._spectra.pop(next(iter(self._spectra)))
                self._spectra[tile] = found
        return found


def transform_weight(weight: np.ndarray, spec: ConvSpec) -> FilterSpectra:
    """The cacheable part: the filter spectrum for ``spec``'s plan (computed now)."""
    spectra = FilterSpectra(weight, spec)
    spectra.get(spec, plan(spec, cached=True, itemsize=weight.itemsize).tile)
    return spectra


# ---------------------------------------------------------------- the convolution
_SPECTRUM, _FORWARD, _PRODUCTS, _INVERSE = 1, 2, 4, 8
_ALL = 15


def fft_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
             transformed_weight: FilterSpectra | None = None,
             tile: tuple[int, int] | None = None) -> np.ndarray:
    """Correlate batched ``x`` with ``weight`` by FFT (stride 1); ``tile`` overrides
    the plan's transform size (for experiments: any size >= the kernel's span)."""
    return _run(x, weight, bias, spec, transformed_weight, tile, _ALL)


def _run(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
         spectra: FilterSpectra | None, tile: tuple[int, int] | None, mask: int) -> np.ndarray:
    cached = spectra is not None
    pl = plan(spec, cached, x.itemsize)
    if tile is not None:
        pl = _fixed_plan(spec, tile, x.itemsize)
    u = spectra.get(spec, pl.tile) if spectra is not None else filter_spectrum(
        weight, spec, pl.tile)
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    if mask == _SPECTRUM:
        return out
    b = np.zeros(spec.out_channels, x.dtype) if bias is None else bias
    (th, tw), (mh, mw), (tiles_h, tiles_w) = pl.tile, pl.step, pl.tiles
    n_tiles = spec.batch * tiles_h * tiles_w
    per_pass = min(pl.per_pass, n_tiles)
    threads = numba.get_num_threads()
    v = np.empty((2, pl.bins, per_pass, spec.in_channels), x.dtype)
    y = np.empty((2, pl.bins, per_pass, spec.out_channels), x.dtype)
    zero = np.zeros(1, np.result_type(x.dtype, np.complex64))[0]
    top, left = spec.padding[0], spec.padding[2]
    for t0 in range(0, n_tiles, per_pass):
        nt = min(per_pass, n_tiles - t0)
        # enough jobs for every thread: split channels when there are few tiles
        splits = _cdiv(4 * threads, nt) if nt < 4 * threads else 1
        cb = _cdiv(spec.in_channels, min(splits, spec.in_channels))
        kb = _cdiv(spec.out_channels, min(splits, spec.out_channels))
        with parallel_region():
            _forward(x, v, t0, nt, cb, th, tw, mh, mw, tiles_h, tiles_w, top, left)
            if mask & _PRODUCTS:
                _products(v, u, y, nt)
            if mask & _INVERSE:
                _inverse(y, b, out, t0, nt, kb, th, tw, mh, mw, tiles_h, tiles_w, zero)
    return out


def _fixed_plan(spec: ConvSpec, tile: tuple[int, int], itemsize: int) -> Plan:
    sh, sw = spec.effective_kernel_size
    th, tw = tile
    if th < sh or tw < sw:
        raise ValueError(f"a {th}x{tw} transform is smaller than the kernel's span {sh}x{sw}")
    step = (th - sh + 1, tw - sw + 1)
    tiles = (_cdiv(spec.out_height, step[0]), _cdiv(spec.out_width, step[1]))
    return Plan(tile, step, tiles, _per_pass(spec, tile, itemsize),
                cost_ns(spec, tile, False, itemsize))


# ---------------------------------------------------------------- registry entry
def _supports(spec: ConvSpec) -> str | None:
    if spec.stride == (1, 1):
        return None
    return (f"needs stride 1: it computes every stride-1 output of each tile; got stride "
            f"{spec.stride} (im2col and parallel take any stride)")


def _available() -> str | None:
    if importlib.util.find_spec("rocket_fft") is None:
        return ("it needs rocket-fft, which lets Numba call the FFT inside @njit: "
                "pip install rocket-fft")
    return None


def _stages(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
            transformed_weight: Any) -> Sequence[tuple[str, Callable[[], Any]]]:
    """The time split for ``convlab bench --split``: each call runs the pipeline up to
    and including its stage (a partial run's output is garbage, never returned)."""
    steps = [("filter spectrum", 1), ("forward FFTs", 3), ("products", 7),
             ("inverse FFTs", 15)]
    if transformed_weight is not None:
        steps = steps[1:]
    return [(name, functools.partial(_run, x, weight, bias, spec, transformed_weight, None, mask))
            for name, mask in steps]


def _workspace(spec: ConvSpec, itemsize: int) -> int:
    pl = plan(spec, False, itemsize)
    n_tiles = spec.batch * pl.tiles[0] * pl.tiles[1]
    per_pass = min(pl.per_pass, n_tiles)
    spectra = 2 * pl.bins * per_pass * (spec.in_channels + spec.out_channels) * itemsize
    return spectra + spectrum_bytes(spec, pl.tile, itemsize)


# algo="auto": fft where its cost model predicts it at least AUTO_MARGIN times faster than
# direct convolution running at DIRECT_MACS_PER_NS multiply-adds per nanosecond per thread
# (parallel's measured single-thread speed on nine layers, 3x3 to 7x7, 8 to 256 channels:
# 31-46 GMAC/s).  Both sides scale with the threads alike.  On those layers the rule picks
# fft exactly where it measured faster than parallel and im2col: from 5x5 up with 32 or
# more channels (1.35-2.0x at 5x5, 3.3x at 7x7), never at 3x3 (Winograd's, ranked
# before) nor with 8-16 channels (a tie or a loss).  The filter is assumed uncached.
DIRECT_MACS_PER_NS = 40.0
AUTO_MARGIN = 1.25


def _auto_when(spec: ConvSpec) -> str | None:
    pl = plan(spec, cached=False)
    need = spectrum_bytes(spec, pl.tile)
    if need > SPECTRUM_BYTES:
        return (f"its filter spectrum would take {need / 2**20:.0f} MiB "
                f"(> {SPECTRUM_BYTES / 2**20:.0f} MiB): too many channels")
    direct_ns = spec.macs() / DIRECT_MACS_PER_NS
    fft_ns = pl.cost_ns
    if direct_ns >= AUTO_MARGIN * fft_ns:
        return None
    kh, kw = spec.kernel_size
    cg = spec.in_channels // spec.groups
    return (f"its cost model predicts {fft_ns / 1e6:.3g} ms against {direct_ns / 1e6:.3g} ms "
            f"for direct convolution (it needs {AUTO_MARGIN}x): {kh}x{kw} taps over {cg} "
            "input channels per group are too few for the transforms to pay")


@register("fft", description="FFT convolution: overlap-save tiles, per-frequency products",
          supports=_supports, available=_available, rtol=3e-6, workspace=_workspace,
          transform_weight=transform_weight, stages=_stages, nonfinite=NonFinite.FFT_TILES,
          auto_rank=15, auto_when=_auto_when, ladder=9,
          multiplies=lambda spec: sum(multiplies(spec).values()))
def conv2d_fft(x, weight, bias, spec, transformed_weight=None):
    return fft_conv(x, weight, bias, spec, transformed_weight)


# ---------------------------------------------------------------- Numba stages
@njit(parallel=True, cache=True, fastmath={"contract"})
def _pruned_dft(wt, e_rows, e_cols, z, z2, u):
    """z[p] = e_rows @ wt[p] (along the rows), then u = e_cols @ z2 (down the columns;
    z2 is z viewed as (2 kh, Twr m)): small-inner-dimension products as Numba loops over
    blocks of columns (a BLAS call per block was slower, and would mix thread pools)."""
    kh, kw, m = wt.shape
    rows, cols = u.shape
    block = 512
    n_blocks = (m + block - 1) // block
    for job in prange(kh * n_blocks):
        p, j0 = job // n_blocks, (job % n_blocks) * block
        j1 = min(m, j0 + block)
        for r in range(e_rows.shape[0]):
            acc = z[p, r, j0:j1]
            acc[:] = 0
            for q in range(kw):
                e = e_rows[r, q]
                src = wt[p, q, j0:j1]
                for j in range(j1 - j0):
                    acc[j] += e * src[j]
    n_blocks = (cols + block - 1) // block
    for jb in prange(n_blocks):
        j0 = jb * block
        j1 = min(cols, j0 + block)
        for r in range(rows):
            acc = u[r, j0:j1]
            acc[:] = 0
            for p2 in range(z2.shape[0]):
                e = e_cols[r, p2]
                src = z2[p2, j0:j1]
                for j in range(j1 - j0):
                    acc[j] += e * src[j]


@njit(parallel=True, cache=True)
def _forward(x, v, t0, nt, cb, th, tw, mh, mw, tiles_h, tiles_w, top, left):
    """v[:, bin, t, c] = rfft2 of tile t0+t of channel c (zeros off the input)."""
    _, c_in, height, width = x.shape
    twr = tw // 2 + 1
    n_cb = (c_in + cb - 1) // cb
    for job in prange(nt * n_cb):
        t, c0 = job // n_cb, (job % n_cb) * cb
        c1 = min(c_in, c0 + cb)
        n, r = (t0 + t) // (tiles_h * tiles_w), (t0 + t) % (tiles_h * tiles_w)
        y0, x0 = (r // tiles_w) * mh - top, (r % tiles_w) * mw - left
        ya, yb = max(0, y0), min(height, y0 + th)
        xa, xb = max(0, x0), min(width, x0 + tw)
        buf = np.zeros((c1 - c0, th, tw), x.dtype)  # the zero padding, and past the edges
        for c in range(c0, c1):
            for yy in range(ya, yb):
                for xx in range(xa, xb):
                    buf[c - c0, yy - y0, xx - x0] = x[n, c, yy, xx]
        s = sfft.rfft2(buf)
        for i in range(th):  # scatter: frequency-major, channels contiguous
            for j in range(twr):
                f = i * twr + j
                for c in range(c1 - c0):
                    z = s[c, i, j]
                    v[0, f, t, c0 + c] = z.real
                    v[1, f, t, c0 + c] = z.imag


@njit(parallel=True, cache=True, fastmath={"contract"})
def _products(v, u, y, nt):
    """y[:, f, t, k] = sum_c v[:, f, t, c] * u[:, f, g, c, k]: per frequency f, a complex
    (tiles x C/g) @ (C/g x K/g) product per group, two tiles at a time (each u value
    loaded once for both), real and imaginary planes apart so LLVM vectorises over k."""
    n_bins = v.shape[1]
    groups, cg, kg = u.shape[2], u.shape[3], u.shape[4]
    for f in prange(n_bins):
        acc = np.empty((4, kg), y.dtype)
        for g in range(groups):
            for t in range(0, nt, 2):
                t1 = min(t + 1, nt - 1)  # an odd last tile pairs with itself
                acc[:] = 0
                for c in range(cg):
                    ar0, ai0 = v[0, f, t, g * cg + c], v[1, f, t, g * cg + c]
                    ar1, ai1 = v[0, f, t1, g * cg + c], v[1, f, t1, g * cg + c]
                    for k in range(kg):
                        ur, ui = u[0, f, g, c, k], u[1, f, g, c, k]
                        acc[0, k] += ar0 * ur - ai0 * ui
                        acc[1, k] += ar0 * ui + ai0 * ur
                        acc[2, k] += ar1 * ur - ai1 * ui
                        acc[3, k] += ar1 * ui + ai1 * ur
                for k in range(kg):
                    y[0, f, t, g * kg + k] = acc[0, k]
                    y[1, f, t, g * kg + k] = acc[1, k]
                    y[0, f, t1, g * kg + k] = acc[2, k]
                    y[1, f, t1, g * kg + k] = acc[3, k]


@njit(parallel=True, cache=True)
def _inverse(y, bias, out, t0, nt, kb, th, tw, mh, mw, tiles_h, tiles_w, zero):
    """out[n, k, tile rows, tile columns] = the first mh x mw points of irfft2(y[:, :, t, k])
    + bias[k]: the valid part of each tile (the rest wrapped around: dropped)."""
    _, k_out, out_h, out_w = out.shape
    twr = tw // 2 + 1
    n_kb = (k_out + kb - 1) // kb
    for job in prange(nt * n_kb):
        t, k0 = job // n_kb, (job % n_kb) * kb
        k1 = min(k_out, k0 + kb)
        n, r = (t0 + t) // (tiles_h * tiles_w), (t0 + t) % (tiles_h * tiles_w)
        i0, j0 = (r // tiles_w) * mh, (r % tiles_w) * mw
        s = np.full((k1 - k0, th, twr), zero)
        for i in range(th):  # gather the tile's spectrum, channel by channel
            for j in range(twr):
                f = i * twr + j
                for k in range(k1 - k0):
                    s[k, i, j] = y[0, f, t, k0 + k] + 1j * y[1, f, t, k0 + k]
        z = sfft.irfft2(s, s=(th, tw))
        for k in range(k0, k1):
            for i in range(min(mh, out_h - i0)):
                for j in range(min(mw, out_w - j0)):
                    out[n, k, i0 + i, j0 + j] = z[k - k0, i, j] + bias[k]
