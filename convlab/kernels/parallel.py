"""Direct convolution, made fast with ``prange``, loop order and blocking (no BLAS).

The arithmetic is exactly ``naive.py``'s: every output is its bias plus the
(C/groups)*kh*kw products of its window, summed in the same (c, p, q) order.
What changes is how the loops walk memory.  Diff this file against naive.py;
each step below is one change.  What each bought, float32, batch 8, on a 2-core
AMD EPYC (Zen 3) whose float32 GEMM peaks at ~190 GFLOP/s (GFLOP/s for ResNet
3x3 64ch@56 / 512ch@7, measured while this file was written, one version of it per
rung; the rungs are gone, the two ends are not: ``convlab bench --suite resnet
--layers res_64x56,res_512x7 --kernels naive,parallel --max-call 30`` times both):

    naive.py (one core)                                   1.1 /    -
    + prange over independent (image, output channel)     2.6 /    -
    + pre-padded input, inner loop over output width     30   /    7
    + flat blocks of rows (step 2)                       40   /   26
    + 4 channels x 3 taps register block (step 3)       124   /   60
    + fastmath "contract" (FMA) = this file             140   /   59

1. **Pre-pad the input** (``convlab.padding.pad``) so no tap ever falls outside
   it: the ``if y < 0 or y >= height`` tests leave the inner loop.  A strided
   convolution is also split into ``sh*sw`` phase planes ("space-to-depth"),
   ``xs[c, a, b, y, x] = xpad[c, y*sh + a, x*sw + b]``: in the phase planes every
   tap reads consecutive addresses for consecutive outputs, i.e. a stride-s
   convolution becomes a stride-1 one and the inner loop stays contiguous.
   With the loop over output width innermost, LLVM vectorises it (8 floats
   per AVX2 instruction): the 10x step above.
2. **Flatten the taps.**  Tap r = (c, p, q) of the window reads the input at a
   fixed offset ``off[r]`` from the window's corner, the same for every output.
   Output (i, j) of a row block is the flat position ``m = i*Ws + j`` of its
   corner in the (phase) plane, so one tap's contribution to a whole block of
   rows is ``acc[m] += w[k, r] * x[base + off[r] + m]`` for consecutive m: one
   long inner loop over output width *and* rows (~``TARGET_BLOCK`` positions)
   instead of many short ones.  The price: ``Ws - Wo`` "junk" columns per row
   that are computed and never stored; for 7x7 outputs 2 of every 9 columns,
   and it still beats 7-long loops 3.5x.
3. **Register blocking.**  Each pass of the inner loop updates ``KB = 4`` output
   channels from ``RU = 3`` taps: it loads 3 input vectors once and uses each 4
   times, so 12 FMAs cost 4 accumulator loads and 4 stores instead of 12 and 12.
   The 12 weights are hoisted (broadcast into registers) out of the m loop.  The
   weight is repacked once to ``wr[block, r, 4]`` so those loads are adjacent.
4. **Accumulate in a local buffer** ``acc[KB, L]`` (a few KiB: stays in L1),
   started at the bias (so the bias costs nothing), written to the output once
   at the end.  The output is never read-modified-written from several places.
5. **prange over independent outputs.**  One task = (image, group, block of
   output rows, block of 4 output channels): tasks never write the same output,
   so there is no race and no atomic; each output's sum is computed by one
   thread in a fixed order, so the result is bit-identical run to run and for
   any thread count.  Consecutive tasks share their input rows (they differ
   only in the channel block), which therefore stay in cache.
6. ``fastmath={"contract"}`` only: LLVM may fuse ``a + w*x`` into one FMA (one
   rounding instead of two), but may *not* reorder the sum (no ``reassoc``): the
   vectorisation is across independent outputs, never across a sum.  Results
   differ from naive's (unfused) ones by rounding only, well within tolerance.

Cost: the same N*K*(C/g)*kh*kw*Ho*Wo multiply-adds as naive, plus the junk
columns and the zero-padded channels of a last partial block of 4 (depthwise:
4x).  Workspace: the padded / phase-split input copy, the repacked weight and
small per-task buffers.

Limits: none; every stride, padding, dilation, group count, both dtypes.  What
bounds it: each pass of the inner loop does 12 FMAs for 7 loads and 4 stores,
so it runs at ~70% of the FMA peak on wide images; on small ones (7x7, 14x14)
a pass covers only a few vectors and the per-pass setup (12 weights, 3 slices)
and the streaming of the weights dominate.

``algo="auto"`` rank 30, right after im2col (20): auto runs it wherever
im2col's ``auto_when`` declines (thin or shallow GEMMs: fewer than 256 output
channels per group or a reduction under 256, i.e. 3-channel first layers at
stride 1, depthwise, 64- and 128-channel layers), which is where it measured
faster than im2col.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..padding import pad
from ..shapes import ConvSpec
from ..threads import parallel_region
from .registry import register

KB = 4  # output channels per task: accumulators updated per pass
RU = 3  # taps per pass of the inner loop
TARGET_BLOCK = 512  # output positions (incl. junk columns) per task
VECTOR = 8  # round the inner loop up to whole AVX2 vectors when memory allows


def phase_planes(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The zero-padded input, split into stride phases: (N, C, sh, sw, Hs, Ws).

    One pass, threaded over the (image, channel) planes: padding and the phase split
    are fused, so the input is read once and the planes written once (padding first,
    with ``np.pad`` on one core, then splitting cost 2.0 ms of the 7x7 stem's 14.9 ms
    at batch 8; this pass takes 0.5).  Only the phases some tap reads are filled (a
    1x1 stride-2 convolution reads one phase in four); the others are zeros.  Without
    padding or stride the input itself is returned (as a view)."""
    sh, sw = spec.stride
    if not any(spec.padding) and (sh, sw) == (1, 1):
        return x.reshape(x.shape[:2] + (1, 1) + x.shape[2:])
    top, _, left, _ = spec.padding
    if spec.padding_mode != "zeros":  # real border values: NumPy pads, then we split
        x, top, left = pad(x, spec), 0, 0
    xs = np.empty(x.shape[:2] + (sh, sw) + plane_shape(spec), dtype=x.dtype)
    with parallel_region():
        _pad_split(np.ascontiguousarray(x), xs, top, left, used_phases(spec))
    return xs


def plane_shape(spec: ConvSpec) -> tuple[int, int]:
    """(Hs, Ws): height and width of one stride-phase plane of the padded input."""
    sh, sw = spec.stride
    return -(-spec.padded_height // sh), -(-spec.padded_width // sw)


def used_phases(spec: ConvSpec) -> np.ndarray:
    """used[a, b]: whether some tap reads stride phase (a, b) of the padded input."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    used = np.zeros((sh, sw), dtype=np.bool_)
    for p in range(kh):
        for q in range(kw):
            used[p * dh % sh, q * dw % sw] = True
    return used


@njit(parallel=True, cache=True)
def _pad_split(x, xs, top, left, used):
    """xs[n, c, a, b, y, v] = x[n, c, y*sh + a - top, v*sw + b - left], 0 where that is
    outside x (the padding) or phase (a, b) is unused.  One task per (image, channel)."""
    n_batch, c_in, sh, sw = xs.shape[:4]
    for t in prange(n_batch * c_in):
        n, c = t // c_in, t % c_in
        for a in range(sh):
            for b in range(sw):
                if used[a, b]:
                    fill_phase_rows(xs[n, c, a, b], x[n, c], 0, a, b, sh, sw, top, left)
                else:
                    xs[n, c, a, b, :, :] = 0


@njit(cache=True)
def fill_phase_rows(dst, src, y0, a, b, sh, sw, top, left):  # pragma: no cover - compiled
    """Rows y0, y0+1, ... (as many as ``dst`` has) of phase (a, b) of the zero-padded
    plane ``src``: ``dst[y, v] = src[(y0 + y)*sh + a - top, v*sw + b - left]``, 0 where
    that is outside ``src``.  ``phase_planes`` fills whole planes with it, ``banded``
    a task's band of rows.  (Numba's on-disk cache of a caller in another file is not
    invalidated when this function changes: after editing it, delete the kernels'
    ``__pycache__`` folder.)"""
    height, width, ws = src.shape[0], src.shape[1], dst.shape[1]
    # the phase columns [v0, v1) whose input column v*sw + b - left exists
    v0 = min(ws, max(0, (left - b + sw - 1) // sw))
    v1 = max(v0, min(ws, (width - 1 + left - b) // sw + 1))
    for y in range(dst.shape[0]):
        iy = (y0 + y) * sh + a - top
        row = dst[y]
        if iy < 0 or iy >= height:
            row[:] = 0
            continue
        row[:v0] = 0
        row[v1:] = 0
        line = src[iy]
        if sw == 1:  # a contiguous copy
            row[v0:v1] = line[v0 - left:v1 - left]
        else:
            for v in range(v0, v1):
                row[v] = line[v * sw + b - left]


def tap_offsets(spec: ConvSpec, hs: int, ws: int) -> np.ndarray:
    """off[(c, p, q)]: where tap (p, q) of channel c sits, relative to the window's
    corner, in the flat phase planes of one image's group."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    c = np.arange(spec.in_channels // spec.groups)[:, None, None]
    p = np.arange(kh)[None, :, None] * dh
    q = np.arange(kw)[None, None, :] * dw
    plane = hs * ws
    off = (c * sh * sw + (p % sh) * sw + (q % sw)) * plane + (p // sh) * ws + q // sw
    return off.reshape(-1).astype(np.int64)


def _repack_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """(K, Cg, kh, kw) -> wr[block, r, KB]: block = group * blocks_per_group + kb;
    output channels padded with zeros to a multiple of KB within each group."""
    k_out = weight.shape[0]
    kg = k_out // groups
    nkb = -(-kg // KB)
    r = weight[0].size
    wg = np.zeros((groups, nkb * KB, r), dtype=weight.dtype)
    wg[:, :kg] = weight.reshape(groups, kg, r)
    return np.ascontiguousarray(wg.reshape(groups * nkb, KB, r).transpose(0, 2, 1))


@register("parallel", description="direct convolution with prange, blocked for cache and SIMD",
          rtol=1e-5, auto_rank=30, ladder=3)  # fmt: skip
def conv2d_parallel(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                    spec: ConvSpec) -> np.ndarray:
    xs = phase_planes(x, spec)
    hs, ws = xs.shape[4], xs.shape[5]
    off = tap_offsets(spec, hs, ws)
    wr = _repack_weight(weight, spec.groups)
    b = np.zeros(spec.out_channels, x.dtype) if bias is None else bias
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    wo = spec.out_width
    rows = max(1, min(spec.out_height, (TARGET_BLOCK - wo) // ws + 1))
    with parallel_region():  # see convlab/threads.py: concurrent calls from threads
        _direct(xs.reshape(-1), wr, off, b, out, spec.groups, xs[0, 0].size, ws, rows)
    return out


@njit(parallel=True, fastmath={"contract"}, cache=True)
def _direct(xf, wr, off, bias, out, groups, chan_size, ws, rows):
    """xf: the flat phase-split input; chan_size: elements per channel (all its
    phases); ws: phase-plane width; rows: output rows per task."""
    n_batch, k_out, ho, wo = out.shape
    n_red = off.shape[0]  # taps per output: (C/g)*kh*kw
    off_max = off.max()  # not always the last tap: phases reorder the strided taps
    kg = k_out // groups
    nkb = -(-kg // KB)  # channel blocks per group
    nrb = -(-ho // rows)  # row blocks
    c_in = xf.shape[0] // (n_batch * chan_size)
    cg = c_in // groups
    img_size = c_in * chan_size
    n_tasks = n_batch * groups * nrb * nkb
    for t in prange(n_tasks):
        kb = t % nkb  # fastest: neighbouring tasks reuse the same input rows
        rb = (t // nkb) % nrb
        g = (t // (nkb * nrb)) % groups
        n = t // (nkb * nrb * groups)
        i0 = rb * rows
        nr = min(rows, ho - i0)
        length = (nr - 1) * ws + wo  # flat positions i*ws + j of this row block
        base = n * img_size + g * cg * chan_size + i0 * ws
        # round up to whole vectors (no scalar tail loop) unless that reads past xf
        lp = -(-length // VECTOR) * VECTOR
        if base + off_max + lp > xf.shape[0]:
            lp = length
        blk = g * nkb + kb
        acc = np.empty((KB, lp), dtype=out.dtype)
        for kk in range(KB):
            k = min(g * kg + kb * KB + kk, k_out - 1)  # padded channels: any bias
            acc[kk, :] = bias[k]
        a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
        r = 0
        while r + RU <= n_red:  # RU = 3 taps x KB = 4 channels per pass: 12 FMAs
            x0 = xf[base + off[r]:base + off[r] + lp]
            x1 = xf[base + off[r + 1]:base + off[r + 1] + lp]
            x2 = xf[base + off[r + 2]:base + off[r + 2] + lp]
            w0, w1, w2 = wr[blk, r], wr[blk, r + 1], wr[blk, r + 2]
            w00, w01, w02, w03 = w0[0], w0[1], w0[2], w0[3]
            w10, w11, w12, w13 = w1[0], w1[1], w1[2], w1[3]
            w20, w21, w22, w23 = w2[0], w2[1], w2[2], w2[3]
            for m in range(lp):
                v0 = x0[m]
                v1 = x1[m]
                v2 = x2[m]
                a0[m] = a0[m] + w00 * v0 + w10 * v1 + w20 * v2
                a1[m] = a1[m] + w01 * v0 + w11 * v1 + w21 * v2
                a2[m] = a2[m] + w02 * v0 + w12 * v1 + w22 * v2
                a3[m] = a3[m] + w03 * v0 + w13 * v1 + w23 * v2
            r += RU
        while r < n_red:  # the last taps (n_red not a multiple of RU), one at a time
            x0 = xf[base + off[r]:base + off[r] + lp]
            w0 = wr[blk, r]
            w00, w01, w02, w03 = w0[0], w0[1], w0[2], w0[3]
            for m in range(lp):
                v0 = x0[m]
                a0[m] = a0[m] + w00 * v0
                a1[m] = a1[m] + w01 * v0
                a2[m] = a2[m] + w02 * v0
                a3[m] = a3[m] + w03 * v0
            r += 1
        for kk in range(min(KB, kg - kb * KB)):  # store the real channels, real columns
            k = g * kg + kb * KB + kk
            for i in range(nr):
                for j in range(wo):
                    out[n, k, i0 + i, j] = acc[kk, i * ws + j]
