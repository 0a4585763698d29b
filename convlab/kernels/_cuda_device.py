"""The device code of ``cuda_naive`` and ``cuda_tiled``: what runs on the GPU.

``convlab/kernels/cuda.py`` tells the story (threads, blocks, shared-memory tiles)
and launches these; this module is imported on first use only, because importing
``numba.cuda`` costs about a second and ``import convlab`` must stay quick.

``numba.cuda`` is imported at the top, as a plain module global, on purpose: Numba's
CUDA *simulator* runs a kernel by swapping the ``cuda`` name in the kernel function's
globals for its own per-thread fake module, so every kernel here refers to ``cuda``
through this module's globals.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import cuda

from .cuda import TileConfig


@functools.cache
def naive_kernel() -> Any:
    """``cuda_naive``: one thread per output element, exactly naive.py's loop body."""

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
def tiled_kernel(dtype: str, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                 cfg: TileConfig) -> tuple[Any, int]:
    """``cuda_tiled`` for these compile-time constants (cached per combination):
    (kernel, threads per block)."""
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
