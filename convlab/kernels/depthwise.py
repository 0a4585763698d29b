"""Depthwise convolution: each input channel convolved with its own few filters.

Depthwise layers (``groups == in_channels``, MobileNet's and EfficientNet's workhorse)
give each input channel ``m`` filters of its own (the *channel multiplier*,
``m = out_channels / in_channels``, usually 1)::

    out[n, c*m + j, i, jo] = bias[c*m + j]
                             + sum_{p, q} x[n, c, i*sh + p*dh - top, jo*sw + q*dw - left]
                                          * w[c*m + j, 0, p, q]

Only ``kh*kw`` (9) multiply-adds per output: there is no channel sum to share work
across.  That makes the layer **memory-bound**: the arithmetic is cheap next to
reading the input and writing the output once.  So the general kernels' tricks are
the wrong ones here:

* im2col copies every input value ``kh*kw`` times into its column matrix (a 9x
  blow-up of a layer whose cost *is* its memory traffic), then runs a 1 x 9 GEMM per
  channel, far too small for BLAS to reach speed;
* ``parallel`` pads the input into a copy (one more pass over memory), splits strided
  inputs into phase planes (another), and blocks 4 output channels per pass, of which
  a depthwise layer has one or two per group (the rest computes zeros);
* Winograd saves multiplies, which are not what this layer spends its time on.

This kernel reads the input once and writes the output once:

1. **No padded copy.**  For each filter column ``q`` the output columns whose tap
   falls inside the input form one range ``[lo, hi)``, computed up front, so the inner
   loop has no bounds test and padding costs nothing; rows outside the input are
   skipped whole.
2. **Strided rows, made contiguous in cache.**  With a column stride ``sw > 1`` one
   input plane (one image, one channel: ~50 KB at 112x112, L2-resident) is split into
   ``sw`` phases per task, so each tap reads consecutive addresses for consecutive
   outputs and the loop vectorises.
3. **The multiplier's channels from one load.**  Each input row segment is used for
   all ``m`` filters of its channel while it is in L1.
4. **Three taps per pass** for a 3-wide filter row at stride 1: the accumulator row is
   loaded and stored once per filter row, not once per tap (3x less L1 traffic for
   3x3 filters; 1.4x faster measured); the one or two edge columns whose taps fall
   on the padding go tap by tap.
5. **One task per (image, channel)**: ``prange`` over independent outputs, each summed
   by one thread in a fixed order (bit-identical run to run); accumulators (one output
   row per filter) stay in L1 and are written once.

6. **Small planes, one loop per tap** (``_depthwise_flat``, input width <= 64): the
   row-by-row loops above are as short as the plane is wide, and at MobileNetV2's 14x14
   and 7x7 their overhead cost more than the arithmetic (0.1-0.4x torch).  There each
   plane is copied into a zero-bordered buffer and each tap is one loop over the whole
   plane, flattened with the buffer's row length (a few junk columns per row computed and
   dropped; a stride applied when storing).  Measured (2-core Zen 4, float32, batch 8,
   each kernel function and torch's conv2d timed in one process, best of 10, torch on
   2 threads; ``convlab bench --model mobilenet_v2`` shows the same layers inside the
   network, each with its ratio), row-by-row -> flat, vs torch:
   960ch@7 0.17x -> 0.51x, 576ch@14 s2 0.32x -> 1.25x, 384ch@14 0.29x -> 0.85x,
   192ch@28 0.41x -> 0.81x, 144ch@56 s2 0.62x -> 0.94x; at 112 columns the row kernel
   stays ahead (32ch: 1.25x against flat's 0.90x).  Planes are grouped into prange tasks
   of at least ``MIN_BLOCK_MACS`` multiply-adds in both kernels.

Cost: N*C*m*Ho*Wo*kh*kw multiply-adds, the input read once and the output written
once from memory (plus the per-task phase split when ``sw > 1``, in cache).  What bounds
it: memory and, in cache, the accumulator traffic (each filter row, or with a column
stride each tap, loads and stores the output row once).  Measured with ``convlab bench
--suite mobilenet --layers mb_dw_32x112,mb_dw_64x112s2 --kernels
depthwise,parallel,im2col,torch`` (2-core EPYC, float32, batch 8, one run): 1.9 ms at
32ch@112 (1.49x torch, 2.1x ``parallel``, 4x im2col; 13.5 GB/s of the ~31-35 GB/s the
machine copies at) and 3.8 ms at 64ch@112 stride 2 (1.12x torch; in other runs
0.8-1.0x: the phase split and three passes per filter row bound it there).  One fix
was worth 4-5x: the inner loops index slices from 0 (see the comment there).  Limits:
depthwise only (``groups == in_channels``, any multiplier, kernel size, stride,
dilation and padding); float32 and float64.  ``fastmath={"contract"}``: multiply-adds
are fused (FMA); each output sums its taps in a fixed order (row by row; a row of
three taps summed first, then added), so results are bit-identical run to run.

``algo="auto"`` picks it for every depthwise layer (rank 12, ahead of im2col and
parallel, which do not suit it: see above).  Source: Howard et al. 2017, "MobileNets"
(arXiv 1704.04861) for the layer; the loop structure is the classic direct
depthwise kernel of mobile inference libraries (e.g. XNNPACK's dwconv).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import parallel_region
from .registry import NonFinite, register

# The least work (multiply-adds) one prange task gets: planes are grouped until a task
# has this much (~10 us), so small planes do not cost more in task overhead than in math.
MIN_BLOCK_MACS = 32768
# Input planes at most this wide take _depthwise_flat (section 6 of the docstring); wider
# ones the row-by-row kernel, which measured faster from 112 columns on
FLAT_MAX_WIDTH = 64


def _supports(spec: ConvSpec) -> str | None:
    if spec.groups == spec.in_channels:
        return None
    return (f"needs a depthwise convolution (groups == in_channels); got groups "
            f"{spec.groups} for {spec.in_channels} input channels")


@register("depthwise", description="depthwise: one pass over the input, no padded copy",
          supports=_supports, rtol=1e-5, auto_rank=12, ladder=5,
          # the row-by-row path of planes wider than FLAT_MAX_WIDTH skips the padding's
          # taps; the small-plane path multiplies its zeros as PyTorch does.  One entry
          # for both: what may differ (auto then checks for NaN/Inf)
          nonfinite=NonFinite.SKIPS_PADDING)
def conv2d_depthwise(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                     spec: ConvSpec) -> np.ndarray:
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    b = np.zeros(spec.out_channels, x.dtype) if bias is None else bias
    (sh, sw), (dh, dw), (top, _, left, _) = spec.stride, spec.dilation, spec.padding
    with parallel_region():  # see convlab/threads.py: concurrent calls from threads
        if spec.width <= FLAT_MAX_WIDTH:  # small planes: one long loop per tap (6.)
            _depthwise_flat(x, weight, b, out, sh, sw, top, left, dh, dw)
        else:
            _depthwise(x, weight, b, out, sh, sw, top, left, dh, dw)
    return out


@njit(parallel=True, fastmath={"contract"}, cache=True)
def _depthwise(x, w, bias, out, sh, sw, top, left, dh, dw):
    n_batch, c_in, height, width = x.shape
    k_out, _, kh, kw = w.shape
    m = k_out // c_in  # the channel multiplier
    ho, wo = out.shape[2], out.shape[3]
    wph = (width + sw - 1) // sw  # width of one column phase
    # per filter column q: its phase b, offset a (input column = sw*(jo + a) + b) and the
    # output columns [lo, hi) whose tap lands inside the input
    phase = np.empty(kw, np.int64)
    shift = np.empty(kw, np.int64)
    lo = np.empty(kw, np.int64)
    hi = np.empty(kw, np.int64)
    for q in range(kw):
        o = q * dw - left
        b = o % sw  # Python's modulo: 0 <= b < sw even for negative o
        a = (o - b) // sw
        phase[q], shift[q] = b, a
        lo[q] = max(0, -a)
        hi[q] = max(lo[q], min(wo, (width - b + sw - 1) // sw - a))
    # A filter row of three adjacent taps (MobileNet's 3x3, stride 1) is added in one
    # pass over the accumulator row instead of three: in the columns [inner_lo,
    # inner_hi) all three land inside the input.  (With a column stride the three taps
    # sit in two phase planes; three slices there measured no faster than three passes.)
    three = kw == 3 and sw == 1 and dw == 1
    inner_lo, inner_hi = 0, wo
    for q in range(kw):
        inner_lo, inner_hi = max(inner_lo, lo[q]), min(inner_hi, hi[q])
    inner_hi = max(inner_hi, inner_lo)
    # Tasks are (image, channel) planes, handed out in blocks of `per`: a 7x7 plane is
    # only ~450 multiply-adds, and a prange iteration with its own allocations per plane
    # cost more than the plane (MobileNetV2's 960ch@7x7: 0.1x torch); a block allocates
    # its accumulator and phase buffer once.
    tasks = n_batch * c_in
    per = max(1, min(tasks, MIN_BLOCK_MACS // max(1, m * ho * wo * kh * kw)))
    blocks = (tasks + per - 1) // per
    phase_shape = (sw, height, wph) if sw > 1 else (1, 1, 1)
    for blk in prange(blocks):  # each plane in one block: no two blocks share an output
        acc = np.empty((m, wo), dtype=out.dtype)
        phb = np.empty(phase_shape, dtype=x.dtype)  # the strided planes' column phases
        for t in range(blk * per, min(tasks, (blk + 1) * per)):
            n = t // c_in
            c = t % c_in
            plane = x[n, c]
            if sw > 1:  # column phases of this plane, in cache: strided taps become contiguous
                # (a phase's last column past the input is never read, see hi)
                ph = phb
                for y in range(height):
                    row_in = plane[y]
                    for b in range(sw):  # no % or // per pixel: a plain strided copy
                        dst_row = ph[b, y]
                        for u in range((width - b + sw - 1) // sw):
                            dst_row[u] = row_in[u * sw + b]
            else:
                ph = plane.reshape((1, height, width))
            for i in range(ho):
                for j in range(m):
                    acc[j, :] = bias[c * m + j]
                for p in range(kh):
                    y = i * sh + p * dh - top
                    if y < 0 or y >= height:
                        continue  # a row of zero padding: nothing to add
                    if three:
                        cols = inner_hi - inner_lo
                        # one slice of the input row from the first tap on: two arrays in
                        # the loop, so LLVM's run-time overlap check stays one check
                        src = ph[0, y, inner_lo + shift[0]:inner_lo + shift[0] + cols + 2]
                        for j in range(m):
                            k = c * m + j
                            w0, w1, w2 = w[k, 0, p, 0], w[k, 0, p, 1], w[k, 0, p, 2]
                            dst = acc[j, inner_lo:inner_hi]
                            for u in range(cols):  # one load and store of acc for 3 taps
                                dst[u] += w0 * src[u] + w1 * src[u + 1] + w2 * src[u + 2]
                            for q in range(3):  # the few edge columns, tap by tap
                                wq = w[k, 0, p, q]
                                for jo in range(lo[q], min(hi[q], inner_lo)):
                                    acc[j, jo] += wq * ph[phase[q], y, jo + shift[q]]
                                for jo in range(max(lo[q], inner_hi), hi[q]):
                                    acc[j, jo] += wq * ph[phase[q], y, jo + shift[q]]
                        continue
                    for q in range(kw):
                        first, cols = lo[q], hi[q] - lo[q]
                        if cols <= 0:
                            continue
                        # Slices that start where the loop starts, so the loop index runs from
                        # 0: Numba adds a wrap-around test to an index that might be negative
                        # (x[-1] is the last item in Python), and with `row[jo + a]` that test
                        # kept LLVM from vectorising the loop: 4-5x slower.
                        src = ph[phase[q], y, first + shift[q]:first + shift[q] + cols]
                        for j in range(m):  # the same input row segment for all m filters
                            wv = w[c * m + j, 0, p, q]
                            dst = acc[j, first:first + cols]
                            for u in range(cols):
                                dst[u] += wv * src[u]
                for j in range(m):
                    out[n, c * m + j, i, :] = acc[j]


@njit(parallel=True, fastmath={"contract"}, cache=True)
def _depthwise_flat(x, w, bias, out, sh, sw, top, left, dh, dw):  # pragma: no cover
    """Small planes: each plane copied once into a zero-bordered buffer, then every tap is
    ONE loop over the whole (stride-1) output plane, flattened with the buffer's row
    length ``wp``, so the loop is long and vectorises, whatever the plane's width.  The
    columns past each output row are junk (computed, never stored): at 7x7 with a 3x3
    filter, 63 products per tap where 49 are kept, against seven loops of five to seven
    for the row-by-row kernel above, whose loop overhead then costs more than the math.
    A stride is applied when the result is stored (every ``sh``-th row, ``sw``-th column):
    up to 4x the products at stride 2, still faster on planes this small."""
    n_batch, c_in, height, width = x.shape
    k_out, _, kh, kw = w.shape
    m = k_out // c_in
    ho, wo = out.shape[2], out.shape[3]
    rows1, cols1 = (ho - 1) * sh + 1, (wo - 1) * sw + 1  # the stride-1 rows/cols needed
    wp = max(width + left, cols1 + (kw - 1) * dw)
    hp = max(height + top, rows1 + (kh - 1) * dh) + 1  # +1 row: the junk columns' reach
    flat = rows1 * wp
    tasks = n_batch * c_in
    per = max(1, min(tasks, MIN_BLOCK_MACS // max(1, m * flat * kh * kw)))
    blocks = (tasks + per - 1) // per
    for blk in prange(blocks):  # each plane in one block: no two blocks share an output
        pad = np.zeros(hp * wp, dtype=x.dtype)  # the border stays zero: only the inside
        acc = np.empty(flat, dtype=out.dtype)   # is rewritten, plane after plane
        for t in range(blk * per, min(tasks, (blk + 1) * per)):
            n = t // c_in
            c = t % c_in
            for y in range(height):
                row = pad[(y + top) * wp + left:(y + top) * wp + left + width]
                src = x[n, c, y]
                for u in range(width):
                    row[u] = src[u]
            for j in range(m):
                k = c * m + j
                bk = bias[k]
                for f in range(flat):
                    acc[f] = bk
                for p in range(kh):
                    for q in range(kw):
                        wv = w[k, 0, p, q]
                        src = pad[p * dh * wp + q * dw:p * dh * wp + q * dw + flat]
                        for f in range(flat):
                            acc[f] += wv * src[f]
                for i in range(ho):
                    dst = out[n, k, i]
                    srow = acc[i * sh * wp:i * sh * wp + cols1]
                    for u in range(wo):
                        dst[u] = srow[u * sw]
