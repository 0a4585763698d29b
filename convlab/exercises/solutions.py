"""Reference solutions to the exercises: what ``exercise.solution()`` prints.

Written the way a student would, from the definitions, for reading.  convlab
itself never calls these (its output-size formula lives in ``shapes.py`` only);
the checks compare students' answers with independent code, not with these.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange


def output_size(size, kernel, stride, padding, dilation):
    # the window spans dilation*(kernel-1)+1 cells; it fits at (size + 2*padding - span)
    # // stride + 1 positions: floor, because a window hanging off the end is dropped
    span = dilation * (kernel - 1) + 1
    return (size + 2 * padding - span) // stride + 1


def same_padding(kernel, dilation):
    total = dilation * (kernel - 1)  # what the window needs so the output keeps its size
    before = total // 2
    return before, total - before  # an odd total puts the extra cell after (bottom/right)


def conv_loops(x, w, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n_batch, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # a new array: x is untouched
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n_batch, c_out, out_h, out_w))
    for n in range(n_batch):
        for k in range(c_out):
            for i in range(out_h):
                for j in range(out_w):
                    acc = 0.0
                    for c in range(c_in):
                        for p in range(kh):
                            for q in range(kw):  # cross-correlation: w is NOT flipped
                                acc += xp[n, c, i * sh + p * dh, j * sw + q * dw] * w[k, c, p, q]
                    out[n, k, i, j] = acc
    return out


def im2col(x, kernel, stride, padding, dilation):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    c_in, height, width = x.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((c_in * kh * kw, out_h * out_w), dtype=x.dtype)
    for c in range(c_in):
        for p in range(kh):
            for q in range(kw):
                row = (c * kh + p) * kw + q  # the same order as w.reshape(K, -1)'s columns
                for i in range(out_h):
                    for j in range(out_w):
                        cols[row, i * out_w + j] = xp[c, i * sh + p * dh, j * sw + q * dw]
    return cols


def winograd_1d(d, g):
    # filter transform G @ g: done once per filter, so its multiplies are not counted
    u0, u1, u2, u3 = g[0], (g[0] + g[1] + g[2]) / 2, (g[0] - g[1] + g[2]) / 2, g[2]
    # input transform B^T @ d: additions only
    v0, v1, v2, v3 = d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]
    m0, m1, m2, m3 = v0 * u0, v1 * u1, v2 * u2, v3 * u3  # the 4 multiplies (direct: 6)
    return [m0 + m1 + m2, m1 - m2 - m3]  # output transform A^T @ m: additions only


@njit(parallel=True)
def conv_prange(x, w):
    n_batch, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    out = np.empty((n_batch, c_out, out_h, out_w), dtype=x.dtype)
    # one iteration per (image, output channel): each writes its own out[n, k] only,
    # so no two threads ever touch the same element (no race)
    for nk in prange(n_batch * c_out):
        n, k = nk // c_out, nk % c_out
        for i in range(out_h):
            for j in range(out_w):
                acc = 0.0  # a local sum: private to this iteration
                for c in range(c_in):
                    for p in range(kh):
                        for q in range(kw):
                            acc += x[n, c, i + p, j + q] * w[k, c, p, q]
                out[n, k, i, j] = acc
    return out


@cuda.jit
def conv_kernel(x, w, out):
    # x (the fastest thread index) runs along columns: neighbouring threads read
    # neighbouring addresses (coalesced); y runs along rows
    j, i = cuda.grid(2)
    c_out, out_h, out_w = out.shape
    if i < out_h and j < out_w:  # the grid is rounded up to whole blocks: guard the edge
        for k in range(c_out):
            acc = 0.0
            for c in range(w.shape[1]):
                for p in range(w.shape[2]):
                    for q in range(w.shape[3]):
                        acc += x[c, i + p, j + q] * w[k, c, p, q]
            out[k, i, j] = acc


@cuda.jit
def conv_tiled_kernel(x, w, out):
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    k = cuda.blockIdx.z  # one output channel per block
    i0, j0 = cuda.blockIdx.y * 4, cuda.blockIdx.x * 4  # the tile's first row, column
    t = ty * 4 + tx  # this thread's number in the block, 0..15
    patch = cuda.shared.array((6, 6), np.float64)  # 4x4 tile + a halo of 2 (3x3 kernel)
    w_s = cuda.shared.array((3, 3), np.float64)
    acc = 0.0
    for c in range(x.shape[0]):
        # 1. stage: 16 threads copy the 36 patch cells, neighbours on neighbouring columns;
        # cells past the input's edge get 0 (only threads off the output's edge read them)
        for e in range(t, 36, 16):
            py, px = e // 6, e % 6
            v = 0.0
            if i0 + py < x.shape[1] and j0 + px < x.shape[2]:
                v = x[c, i0 + py, j0 + px]
            patch[py, px] = v
        if t < 9:
            w_s[t // 3, t % 3] = w[k, c, t // 3, t % 3]
        cuda.syncthreads()  # 2. nobody reads the patch before it is complete
        for p in range(3):  # 3. 9 multiply-adds from shared memory
            for q in range(3):
                acc += patch[ty + p, tx + q] * w_s[p, q]
        cuda.syncthreads()  # 4. nobody overwrites it while a slower thread still reads
    i, j = i0 + ty, j0 + tx
    if i < out.shape[1] and j < out.shape[2]:  # off the edge: only the store is skipped
        out[k, i, j] = acc
