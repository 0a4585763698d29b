"""im2col backward: both gradients as matrix products, and ``col2im`` to fold back.

The forward (``im2col.py``) is ``out = W @ cols`` per group, where ``cols`` is the
lowered input (one column per output position, one row per tap (c, p, q)) and ``W``
the weight as a (K/g, (C/g)*kh*kw) matrix.  A matrix product has two gradients,
both matrix products again::

    grad_W    = grad_out @ cols.T          (K/g x positions) @ (positions x (C/g)*kh*kw)
    grad_cols = W.T @ grad_out             ((C/g)*kh*kw x K/g) @ (K/g x positions)

* **grad_weight** is the first: lower the input exactly as the forward does (the
  forward's own ``_lower``, flat rows with junk columns, zeroed here), lay
  grad_output out as the matching (K, positions) matrix, one BLAS GEMM per group,
  summed over chunks of images.  The reduction runs over N*Hout*Wout, the long side:
  BLAS is at its best.
* **grad_input** is the second, then **col2im**, the transpose of the lowering.
  Lowering *copied* input cell (y, x) into every column whose window covers it, so
  its gradient is the *sum* of those columns' entries: col2im adds each row (c, p, q)
  of ``grad_cols``, shifted by the tap's offset, back onto channel c of the padded
  input gradient.  Those adds overlap (neighbouring windows share cells), so two
  threads adding different columns into one cell would race.  Race-free by
  construction: every row (c, p, q) writes channel c only, so the work is split by
  (image, channel): a task adds its channel's kh*kw rows one after the other, in a
  fixed order, and no other task touches that channel (``prange``, deterministic).
  Junk columns are skipped.  Then the stride phases are merged back and the
  padding is cropped (the gradient of a zero is not needed).

Chunks.  Like the forward, images (or, for one big image, bands of output rows)
are processed in chunks so that the column matrix and grad_output's matrix fit
under the workspace cap (``convlab.kernels.im2col.workspace_cap``), as many images
per chunk as fit: every chunk of grad_input alternates OpenBLAS's threads (the
GEMM) with Numba's (col2im), and each pool spins for a while after its work, so
fewer, bigger chunks waste less.  The padded input (grad_weight) or padded input
gradient (grad_input) is one whole buffer, not tiled (a limit: a padding so large
that it alone is over the cap is not cut).

Cost.  The GEMMs do the forward's multiply-adds (times Ws/Wo for junk columns).
grad_input also writes and re-reads a column matrix kh*kw times the size of the
input gradient, and col2im's adds are memory-bound, as the forward's lowering is.

Source: Caffe's ``col2im_cpu`` and ``BaseConvolutionLayer::backward_cpu_gemm``;
K. Chellapilla, S. Puri, P. Simard (2006).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import parallel_region
from .im2col import _auto_when, _lower, get_workspace_cap
from .parallel import phase_planes, tap_offsets
from .registry import register


def _plane_shape(spec: ConvSpec) -> tuple[int, int]:
    """(hs, ws): one stride-phase plane of the padded input (``parallel.phase_planes``)."""
    sh, sw = spec.stride
    return -(-spec.padded_height // sh), -(-spec.padded_width // sw)


def chunks(spec: ConvSpec, itemsize: int, cap: int | None = None) -> list[tuple[int, int, int,
                                                                               int]]:
    """(n0, nb, i0, nr): images n0..n0+nb, output rows i0..i0+nr, per GEMM chunk, so the
    column matrix and grad_output's matrix (``(C*kh*kw + K) x columns``) fit the cap:
    as many images as fit (few chunks: each one hands the cores from OpenBLAS's threads
    to Numba's for col2im and back, and a pool that just finished spins for a while),
    else bands of rows of one image (at least one row)."""
    cap = get_workspace_cap() if cap is None else cap
    n, ho = spec.batch, spec.out_height
    ws = _plane_shape(spec)[1]
    kh, kw = spec.kernel_size
    per_col = (spec.in_channels * kh * kw + spec.out_channels) * itemsize
    images = min(n, cap // (per_col * ho * ws))
    if images >= 1:
        return [(n0, min(images, n - n0), 0, ho) for n0 in range(0, n, images)]
    rows = max(1, min(ho, cap // (per_col * ws)))
    return [(n0, 1, i0, min(rows, ho - i0)) for n0 in range(n) for i0 in range(0, ho, rows)]


def workspace_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes allocated at once: the padded (phase-split) input or input gradient, and the
    biggest chunk's column matrix and grad_output matrix."""
    hs, ws = _plane_shape(spec)
    padded = spec.batch * spec.in_channels * spec.stride[0] * spec.stride[1] * hs * ws
    kh, kw = spec.kernel_size
    widest = max(nb * nr * ws for _, nb, _, nr in chunks(spec, itemsize))
    return (padded + (spec.in_channels * kh * kw + spec.out_channels) * widest) * itemsize


def _spread(grad_output: np.ndarray, n0: int, nb: int, i0: int, nr: int, ws: int,
            out: np.ndarray) -> np.ndarray:
    """grad_output's chunk as the (K, nb*nr*ws) matrix whose columns line up with the
    lowered input's: column ``b*nr*ws + i*ws + j`` is output (n0+b, i0+i, j), zero in
    the junk columns j >= Wo."""
    k_out, wo = grad_output.shape[1], grad_output.shape[3]
    mat = out[:, :nb * nr * ws]
    view = mat.reshape(k_out, nb, nr, ws)
    view[..., :wo] = grad_output[n0:n0 + nb, :, i0:i0 + nr].transpose(1, 0, 2, 3)
    view[..., wo:] = 0
    return mat


def _auto_when_backward(spec: ConvSpec) -> str | None:
    """Where auto prefers these kernels to ``parallel_backward``'s: the forward's rule
    (``im2col._auto_when``: GEMMs at least 256 x 256, or plain 1x1 layers).  Measured
    for the backward too, ``convlab bench --backward --suite all --kernels
    im2col,parallel``, 2-core AMD EPYC, batch 8: im2col's grad_input and grad_weight
    won on ResNet 256@14 and 512@7 and on the 512-channel 1x1 layer, parallel's on the
    64/128-channel layers, the stem and depthwise (where col2im and the lowering cost
    more than the GEMM saves)."""
    return _auto_when(spec)


@register("im2col", op="grad_weight", rtol=1e-5, auto_rank=20, workspace=workspace_bytes,
          auto_when=lambda spec: _auto_when_backward(spec),
          description="grad_output @ lowered input^T, one BLAS GEMM per group and chunk")
def grad_weight_im2col(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    if spec.batch == 0 or spec.in_channels == 0:  # no product was made: torch's zeros
        return np.zeros(spec.weight_shape, dtype=x.dtype)
    g = spec.groups
    k_out, wo = spec.out_channels, spec.out_width
    kg, rg = k_out // g, spec.reduction_length
    xs = phase_planes(x, spec)
    ws = xs.shape[5]
    off = tap_offsets(spec, xs.shape[4], ws)
    xf = xs.reshape(-1)
    chan_block = (spec.in_channels // g) * xs[0, 0].size
    plan = chunks(spec, x.dtype.itemsize)
    widest = max(nb * nr * ws for _, nb, _, nr in plan)
    cols = np.empty((g * rg, widest), dtype=x.dtype)
    gmat = np.empty((k_out, widest), dtype=x.dtype)
    part = np.empty((kg, rg), dtype=x.dtype)
    grad_w = np.zeros((k_out, rg), dtype=x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/Inf propagate as elsewhere
        for n0, nb, i0, nr in plan:
            length, width = nr * ws, nb * nr * ws
            _lower(xf, cols, xs[0].size, chan_block, off, rg, n0, nb, i0 * ws, length)
            # junk columns read real inputs past the row's end: zero them, so that a
            # NaN/Inf there meets 0 * 0 and not 0 * Inf
            cols[:, :width].reshape(g * rg, nb * nr, ws)[..., wo:] = 0
            gm = _spread(grad_output, n0, nb, i0, nr, ws, gmat)
            for grp in range(g):
                np.matmul(gm[grp * kg:(grp + 1) * kg], cols[grp * rg:(grp + 1) * rg, :width].T,
                          out=part)
                grad_w[grp * kg:(grp + 1) * kg] += part
    return grad_w.reshape(spec.weight_shape)


@register("im2col", op="grad_input", rtol=1e-5, auto_rank=20, workspace=workspace_bytes,
          auto_when=lambda spec: _auto_when_backward(spec),
          description="W^T @ grad_output per group (BLAS), then col2im: race-free adds "
                      "back onto the input, prange over (image, channel)")  # fmt: skip
def grad_input_im2col(grad_output: np.ndarray, weight: np.ndarray,
                      spec: ConvSpec) -> np.ndarray:
    if spec.batch == 0 or spec.in_channels == 0:  # no product was made: torch's zeros
        return np.zeros((spec.batch, spec.in_channels, spec.height, spec.width),
                        dtype=grad_output.dtype)
    g = spec.groups
    k_out = spec.out_channels
    kg, rg = k_out // g, spec.reduction_length
    hs, ws = _plane_shape(spec)
    sh, sw = spec.stride
    grad_xs = np.zeros((spec.batch, spec.in_channels, sh, sw, hs, ws), dtype=grad_output.dtype)
    off = tap_offsets(spec, hs, ws)
    chan_block = (spec.in_channels // g) * sh * sw * hs * ws
    plan = chunks(spec, grad_output.dtype.itemsize)
    widest = max(nb * nr * ws for _, nb, _, nr in plan)
    cols = np.empty((g * rg, widest), dtype=grad_output.dtype)
    gmat = np.empty((k_out, widest), dtype=grad_output.dtype)
    wt = [np.ascontiguousarray(weight[grp * kg:(grp + 1) * kg].reshape(kg, rg).T)
          for grp in range(g)]  # (rg, kg) per group: W^T
    with np.errstate(over="ignore", invalid="ignore"):
        for n0, nb, i0, nr in plan:
            width = nb * nr * ws
            gm = _spread(grad_output, n0, nb, i0, nr, ws, gmat)
            for grp in range(g):
                np.matmul(wt[grp], gm[grp * kg:(grp + 1) * kg], out=cols[grp * rg:(grp + 1) * rg,
                                                                         :width])
            with parallel_region():  # see convlab/threads.py
                _col2im(cols, grad_xs.reshape(-1), spec.in_channels, g, off, chan_block,
                        sh * sw * hs * ws * spec.in_channels, n0, nb, i0 * ws, nr, ws,
                        spec.out_width)  # fmt: skip
    return _merge_and_crop(grad_xs, spec)


@njit(parallel=True, cache=True)
def _col2im(cols, gxf, c_in, groups, off, chan_block, img, n0, nb, m0, nr, ws, wo):
    """gxf[(n0+b)*img + grp*chan_block + off[r] + m0 + i*ws + j] += cols[grp*rg + r,
    b*nr*ws + i*ws + j] for every tap row r of the group, j < wo: one task per (image b,
    channel c) adds the kh*kw rows of channel c, which write channel c only."""
    cg = c_in // groups
    rg = off.shape[0]
    taps = rg // cg
    length = nr * ws
    for t in prange(nb * c_in):  # independent channels: no two tasks add to one cell
        b = t // c_in
        c = t % c_in
        grp = c // cg
        base = (n0 + b) * img + grp * chan_block + m0
        for r in range((c % cg) * taps, (c % cg + 1) * taps):
            src = cols[grp * rg + r]
            dst0 = base + off[r]
            for i in range(nr):
                s = b * length + i * ws
                d = dst0 + i * ws
                for j in range(wo):  # the junk columns j >= wo are skipped
                    gxf[d + j] += src[s + j]


def _merge_and_crop(grad_xs: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The (N, C, H, W) input gradient from its phase planes (N, C, sh, sw, Hs, Ws):
    padded cell (Y, X) lives in phase (Y % sh, X % sw) at (Y // sh, X // sw); only the
    unpadded cells are kept."""
    sh, sw = spec.stride
    top, left = spec.padding[0], spec.padding[2]
    h, w = spec.height, spec.width
    out = np.empty((spec.batch, spec.in_channels, h, w), dtype=grad_xs.dtype)
    for a in range(sh):
        y0 = (a - top) % sh  # first unpadded row in phase a
        rows = len(range(y0, h, sh))
        for b in range(sw):
            x0 = (b - left) % sw
            cols = len(range(x0, w, sw))
            ya, xb = (y0 + top) // sh, (x0 + left) // sw
            out[:, :, y0::sh, x0::sw] = grad_xs[:, :, a, b, ya:ya + rows, xb:xb + cols]
    return out
