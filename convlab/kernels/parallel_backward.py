"""Parallel direct backward: both gradients as gathers, prange over independent outputs.

``naive_backward.py`` scatters: every output adds into the input and weight cells
that fed it, so two threads would race on the same cells.  This file turns each
gradient into a *gather* (a correlation: every result cell sums what reaches it,
in a fixed order, and nobody else writes it), so ``prange`` can split the results
among threads with no race, no atomic and a bit-identical answer for any thread
count.  Diff it against naive_backward.py.

**grad_input: a forward convolution of the dilated grad_output with the flipped
kernel.**  Along one axis the forward is ``out[i] = sum_p xpad[i*s + p*d] w[p]``,
so input cell ``y`` (of the padded input) receives ``go[i] * w[p]`` from every
(i, p) with ``i*s + p*d = y``.  Insert ``s - 1`` zeros between the rows of
grad_output (``god[i*s] = go[i]``, 0 elsewhere: the "zero-dilated" grad_output)
and that sum is ``sum_p god[y - p*d] w[p]``; with ``p' = k-1-p`` it reads the
window ``god[y - (k-1)*d + p'*d]``, p' = 0..k-1: a stride-1 correlation, dilation
d, with the kernel *flipped*, over ``god`` padded by ``(k-1)*d`` (the "full"
correlation).  The channels swap roles: the flipped weight read as
(C, K/groups, kh, kw) maps K channels to C, group by group.  So :func:`grad_input`
builds that zero-dilated, padded grad_output once (:func:`dilate_grad_output`,
placed so its output starts at the first *unpadded* input row: the forward's
padding is cropped for free) and runs ``parallel.py``'s forward kernel on it:
same blocking, same prange over (image, group, row block, channel block).

**grad_weight: a correlation of the input with grad_output.**  ``gw[k, c, p, q] =
sum_{n, i, j} go[n, k, i, j] * xpad[n, c, i*s + p*d, j*s + q*d]``: for each tap a
dot product of grad_output's plane with the input plane shifted by the tap's
offset, over every image.  The layout makes it one long dot product: the padded
input is split into stride phases channel-major, ``xt[c, phase, n, y, x]``, and
grad_output is spread over the same (n, Hs, Ws) planes with zeros outside its
Ho x Wo corner, so for tap (p, q) ``gw[k, c, p, q] = sum_m gt[k, m] *
xt[c, m + off[p, q]]`` over all images at once (a read that runs past an image's
windows meets a zero of gt).  Small planes waste much of that on junk positions (a
7x7 output on 9x9 planes: 81 products for 49), so there the input is copied once per
tap instead, on grad_output's own positions (:func:`lowered_taps`, im2col's columns
channel-major; :func:`lowers` decides): ``off`` then steps from one tap's copy to the
next, and the same dot-product loop runs with no junk.  One task = (group, block of
``KB`` = 4 output channels, one input channel c): it computes the 4 x kh*kw results
of that block, ``RU`` = 3 taps per pass (12 dot products: 4 + 3 vector loads for 12
FMAs), in chunks of ``CHUNK`` positions that stay in L1 across the passes.  Tasks go
block of input channels by block (``L2_BLOCK_BYTES``), so the input rows a thread reads
stay in its L2 while every output-channel block passes over them.  Each dot product
is one task's: deterministic.  Its 12 running sums are vector registers: this
function alone allows ``fastmath`` "reassoc", the sum of a long dot product in
vector lanes (8 or 16 partial sums added at the end), a different order from
naive's, still the same on every run.

Cost: grad_input does (K/groups)*kh*kw multiply-adds per input cell, *including
the inserted zeros*: a stride-s layer does s_h*s_w times the useful work (the
zeros are multiplied too; splitting the input gradient into its s_h*s_w phases,
each a correlation with a sub-kernel, would avoid that), plus one copy of the
dilated grad_output.  grad_weight does the useful N*K*(C/g)*kh*kw*Ho*Wo multiply-adds plus
the junk positions (``Ws - Wo`` columns per row, ``Hs - Ho`` rows per image, all
zeros), and copies the input (phase split) and grad_output (spread) once; or, lowered,
only the useful ones, after kh*kw copies of the input.

Limits: none; every stride, padding, dilation, group count, both dtypes.  NaN/Inf:
the inserted zeros and the junk positions multiply real values, so an Inf in the
weight (grad_input) or a NaN/Inf in the input (grad_weight) also turns results
into NaN that PyTorch leaves finite (``nonfinite`` below; ``algo="auto"`` passes
these kernels over for such input).

Source: the transposed-convolution identity (V. Dumoulin, F. Visin, "A guide to
convolution arithmetic for deep learning", 2016, section 4); cs231n's notes on
the backward pass of a convolution.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..padding import pad
from ..shapes import ConvSpec
from ..threads import parallel_region
from .parallel import conv2d_parallel
from .registry import NonFinite, register

KB = 4  # output channels per grad_weight task
RU = 3  # taps per pass of the grad_weight inner loop
CHUNK = 1024  # positions per pass: 7 slices of 4 KiB (float32) stay in L1 across passes


def flipped_transposed_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """(K, C/g, kh, kw) -> (C, K/g, kh, kw): per group, input and output channels
    swapped and both spatial axes reversed: the kernel of grad_input's correlation."""
    k_out, cg, kh, kw = weight.shape
    kg = k_out // groups
    w = weight.reshape(groups, kg, cg, kh, kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return np.ascontiguousarray(w).reshape(groups * cg, kg, kh, kw)


def _placed_rows(size: int, out: int, lo: int, stride: int) -> tuple[int, int]:
    """Output rows i in [i0, i1) whose dilated position lo + i*stride lands in [0, size)."""
    i0 = max(0, -(lo // stride))  # -(lo // s) = ceil(-lo / s)
    i1 = min(out, -(-(size - lo) // stride))
    return i0, max(i0, i1)


def dilate_grad_output(grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """grad_output with ``stride - 1`` zeros between its rows (columns), placed in a
    zero (N, K, H + (kh-1)*dh, W + (kw-1)*dw) array so that a stride-1 correlation of
    it with the flipped kernel (dilation d) gives exactly the H x W input gradient:
    row i of grad_output goes to row ``(kh-1)*dh - top + i*sh``.  Rows that land
    outside are outputs whose whole window lay in the padding: no input cell got
    anything from them."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    gh, gw = spec.height + (kh - 1) * dh, spec.width + (kw - 1) * dw
    lo_h, lo_w = (kh - 1) * dh - spec.padding[0], (kw - 1) * dw - spec.padding[2]
    out = np.zeros((spec.batch, spec.out_channels, gh, gw), dtype=grad_output.dtype)
    i0, i1 = _placed_rows(gh, spec.out_height, lo_h, sh)
    j0, j1 = _placed_rows(gw, spec.out_width, lo_w, sw)
    if i1 > i0 and j1 > j0:
        out[:, :, lo_h + i0 * sh: lo_h + (i1 - 1) * sh + 1: sh,
            lo_w + j0 * sw: lo_w + (j1 - 1) * sw + 1: sw] = grad_output[:, :, i0:i1, j0:j1]
    return out


def transposed_spec(spec: ConvSpec) -> ConvSpec:
    """The stride-1 forward convolution grad_input is: K -> C channels over the dilated
    grad_output, the forward's dilation and groups, no padding, output H x W."""
    (kh, kw), (dh, dw) = spec.kernel_size, spec.dilation
    return ConvSpec(batch=spec.batch, in_channels=spec.out_channels,
                    height=spec.height + (kh - 1) * dh, width=spec.width + (kw - 1) * dw,
                    out_channels=spec.in_channels, kernel_size=(kh, kw), dilation=(dh, dw),
                    groups=spec.groups)  # fmt: skip


@register("parallel", op="grad_input", rtol=1e-5, auto_rank=30,
          nonfinite=NonFinite.INSERTED_ZEROS,
          description="forward parallel kernel on the zero-dilated grad_output with the "
                      "flipped kernel")  # fmt: skip
def grad_input_parallel(grad_output: np.ndarray, weight: np.ndarray,
                        spec: ConvSpec) -> np.ndarray:
    if spec.batch == 0 or spec.in_channels == 0:  # no product was made: torch's zeros
        return np.zeros((spec.batch, spec.in_channels, spec.height, spec.width),
                        dtype=grad_output.dtype)
    god = dilate_grad_output(grad_output, spec)
    wt = flipped_transposed_weight(weight, spec.groups)
    return conv2d_parallel(god, wt, None, transposed_spec(spec))


def channel_major_planes(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The zero-padded input split into stride phases, channel-major:
    ``xt[c, a*sw + b, n, y, x] = xpad[n, c, y*sh + a, x*sw + b]`` (0 past the edge)."""
    xp = pad(x, spec) if any(spec.padding) else x
    (sh, sw), (n, c, hp, wp) = spec.stride, xp.shape
    hs, ws = -(-hp // sh), -(-wp // sw)
    xt = np.zeros((c, sh * sw, n, hs, ws), dtype=x.dtype)
    for a in range(sh):
        for b in range(sw):
            phase = xp[:, :, a::sh, b::sw]
            xt[:, a * sw + b, :, :phase.shape[2], :phase.shape[3]] = phase.transpose(1, 0, 2, 3)
    return xt


def plane_tap_offsets(spec: ConvSpec, planes: int, hs: int, ws: int) -> np.ndarray:
    """off[p*kw + q]: where tap (p, q) reads in one channel of ``channel_major_planes``,
    relative to the position of grad_output's element (its phase plane, then the
    shift within it)."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    p = np.arange(kh)[:, None] * dh
    q = np.arange(kw)[None, :] * dw
    off = ((p % sh) * sw + q % sw) * planes + (p // sh) * ws + q // sw
    return off.reshape(-1).astype(np.int64)


def lowers(spec: ConvSpec, itemsize: int) -> bool:
    """Whether grad_weight reads the input through :func:`lowered_taps` (one copy per
    tap, no junk position) rather than :func:`channel_major_planes` (one copy, but the
    dot products also run over the ``Hs*Ws - Ho*Wo`` junk positions of every plane).
    Small planes waste the most: 7x7 outputs padded to 9x9 planes multiply 81 positions
    for 49 results (1.65x the work), 14x14 on 16x16 1.31x, 56x56 on 58x58 1.07x.  The
    copies cost kh*kw times the input's bytes, so the lowered form is taken where the
    waste passes LOWER_MIN_WASTE and the copies fit LOWER_MAX_BYTES."""
    (sh, sw), (t, b, l, r) = spec.stride, spec.padding
    hs = -(-(spec.height + t + b) // sh)
    ws = -(-(spec.width + l + r) // sw)
    useful = spec.out_height * spec.out_width
    taps = spec.kernel_size[0] * spec.kernel_size[1]
    size = spec.in_channels * taps * spec.batch * useful * itemsize
    return useful > 0 and hs * ws > LOWER_MIN_WASTE * useful and size <= LOWER_MAX_BYTES


# measured quiet (ResNet-18's layers, batch 8, float32, 2 threads, one process; ms,
# planes -> lowered): 512@7 (waste 1.65) 20.5 -> 14.5, 256@14 (1.31) 13.6 -> 12.5,
# 256->512@14 s2 (1.31) 8.7 -> 7.3; 128@28 (1.15) 12.9 -> 13.9, 128->256@28 s2 (1.15)
# 7.8 -> 7.3, 64@56 (1.07) 12.5 -> 18.9: the copies cost more than the junk where
# the planes are big (blocking by input channels took 512@7's planes from 17.3 to 20.5
# and 64->128@56 s2's from 11.4 to 7.3)
LOWER_MIN_WASTE = 1.2
L2_BLOCK_BYTES = 512 << 10  # input rows one block of input channels holds: half a 1 MiB L2
LOWER_MAX_BYTES = 32 << 20


@njit(parallel=True, cache=True)
def _lower_taps(x, top, left, sh, sw, dh, dw, kh, kw, ho, wo, out):  # pragma: no cover
    """out[c, p*kw + q, (n*ho + i)*wo + j] = xpad[n, c, i*sh + p*dh, j*sw + q*dw]."""
    n_img, c_in, h, w = x.shape
    for t in prange(c_in * kh * kw):
        c = t // (kh * kw)
        p = (t // kw) % kh
        q = t % kw
        dst = out[c, p * kw + q]
        for n in range(n_img):
            for i in range(ho):
                y = i * sh + p * dh - top
                base = (n * ho + i) * wo
                if y < 0 or y >= h:
                    for j in range(wo):
                        dst[base + j] = 0
                    continue
                row = x[n, c, y]
                for j in range(wo):
                    xx = j * sw + q * dw - left
                    dst[base + j] = row[xx] if 0 <= xx < w else 0


def lowered_taps(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The zero-padded input as every tap reads it, channel-major, on grad_output's
    positions: ``xl[c, p*kw + q, (n*Ho + i)*Wo + j] = xpad[n, c, i*s_h + p*d_h,
    j*s_w + q*d_w]`` (im2col's column matrix with the channel axis first)."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    ho, wo = spec.out_height, spec.out_width
    length = spec.batch * ho * wo
    out = np.zeros((spec.in_channels, kh * kw, -(-length // 16) * 16), dtype=x.dtype)
    with parallel_region():
        _lower_taps(x, spec.padding[0], spec.padding[2], sh, sw, dh, dw, kh, kw, ho, wo, out)
    return out


@register("parallel", op="grad_weight", rtol=1e-5, auto_rank=30,
          nonfinite=NonFinite.JUNK_POSITIONS,
          description="dot products of grad_output with the shifted input planes, "
                      "4 channels x 3 taps per pass, prange over weights")  # fmt: skip
def grad_weight_parallel(x: np.ndarray, grad_output: np.ndarray,
                         spec: ConvSpec) -> np.ndarray:
    if spec.batch == 0 or spec.in_channels == 0:  # no product was made: torch's zeros
        return np.zeros(spec.weight_shape, dtype=x.dtype)
    k_out, ho, wo = spec.out_channels, spec.out_height, spec.out_width
    if lowers(spec, x.dtype.itemsize):
        # one row per (channel, tap) and grad_output's own positions: no junk at all
        xt = lowered_taps(x, spec)
        c_in, n_taps, length = xt.shape
        gt = np.zeros((k_out, length), dtype=x.dtype)
        gt[:, :spec.batch * ho * wo] = grad_output.transpose(1, 0, 2, 3).reshape(k_out, -1)
        off = np.arange(n_taps, dtype=np.int64) * length
    else:
        planes = channel_major_planes(x, spec)
        c_in, _, n, hs, ws = planes.shape
        xt = planes
        gt = np.zeros((k_out, n, hs, ws), dtype=x.dtype)  # grad_output on the input's planes
        gt[:, :, :ho, :wo] = grad_output.transpose(1, 0, 2, 3)
        off = plane_tap_offsets(spec, n * hs * ws, hs, ws)
        length = (n - 1) * hs * ws + (ho - 1) * ws + wo  # past the last output: only zeros
    cg = spec.in_channels // spec.groups
    gw = np.empty((k_out, cg, off.shape[0]), dtype=x.dtype)
    with parallel_region():  # see convlab/threads.py: concurrent calls from threads
        xf = xt.reshape(c_in, -1)
        cbs = max(1, min(cg, L2_BLOCK_BYTES // (xf.shape[1] * xf.itemsize)))
        _dot_products(xf, gt.reshape(k_out, -1), off, gw, length, cbs)
    return gw.reshape(spec.weight_shape)


@njit(parallel=True, fastmath={"contract", "reassoc"}, cache=True)
def _dot_products(xt, gt, off, gw, length, cbs):
    """gw[k, c, r] = sum_{m < length} gt[k, m] * xt[g*cg + c, off[r] + m] for the k of
    group g; one task per (group, block of KB output channels, input channel), ordered
    by blocks of ``cbs`` input channels: every output-channel block visits one block of
    input channels before the next, so the input rows stay in L2 (an order over all
    input channels would read the whole input from memory once per KB output channels)."""
    k_out, cg, n_taps = gw.shape
    groups = xt.shape[0] // cg
    kg = k_out // groups
    nkb = -(-kg // KB)
    ncb = -(-cg // cbs)
    for t in prange(groups * ncb * nkb * cbs):
        c = (t // (nkb * cbs)) % ncb * cbs + t % cbs  # fastest: tasks share grad_output
        kb = (t // cbs) % nkb
        g = t // (cbs * nkb * ncb)
        if c >= cg:  # past the last, shorter block of input channels
            continue
        k0 = g * kg + kb * KB
        nk = min(KB, kg - kb * KB)
        xc = xt[g * cg + c]
        acc = np.zeros((KB, n_taps), dtype=gw.dtype)
        zero = acc[0, 0]
        # a block short of KB channels repeats its last one (computed, not stored)
        ka, kb1, kb2, kb3 = k0, k0 + min(1, nk - 1), k0 + min(2, nk - 1), k0 + min(3, nk - 1)
        for m0 in range(0, length, CHUNK):
            size = min(CHUNK, length - m0)
            g0, g1 = gt[ka, m0:m0 + size], gt[kb1, m0:m0 + size]
            g2, g3 = gt[kb2, m0:m0 + size], gt[kb3, m0:m0 + size]
            for r in range(0, n_taps, RU):  # RU taps x KB channels per pass: 12 sums
                r1, r2 = min(r + 1, n_taps - 1), min(r + 2, n_taps - 1)
                x0 = xc[off[r] + m0:off[r] + m0 + size]
                x1 = xc[off[r1] + m0:off[r1] + m0 + size]
                x2 = xc[off[r2] + m0:off[r2] + m0 + size]
                s00 = s01 = s02 = s10 = s11 = s12 = zero
                s20 = s21 = s22 = s30 = s31 = s32 = zero
                for m in range(size):
                    a0, a1, a2, a3 = g0[m], g1[m], g2[m], g3[m]
                    b0, b1, b2 = x0[m], x1[m], x2[m]
                    s00 += a0 * b0
                    s01 += a0 * b1
                    s02 += a0 * b2
                    s10 += a1 * b0
                    s11 += a1 * b1
                    s12 += a1 * b2
                    s20 += a2 * b0
                    s21 += a2 * b1
                    s22 += a2 * b2
                    s30 += a3 * b0
                    s31 += a3 * b1
                    s32 += a3 * b2
                acc[0, r] += s00
                acc[1, r] += s10
                acc[2, r] += s20
                acc[3, r] += s30
                if r + 1 < n_taps:  # a last pass short of RU taps repeats its last tap
                    acc[0, r + 1] += s01
                    acc[1, r + 1] += s11
                    acc[2, r + 1] += s21
                    acc[3, r + 1] += s31
                if r + 2 < n_taps:
                    acc[0, r + 2] += s02
                    acc[1, r + 2] += s12
                    acc[2, r + 2] += s22
                    acc[3, r + 2] += s32
        for a in range(nk):
            for r in range(n_taps):
                gw[k0 + a, c, r] = acc[a, r]
