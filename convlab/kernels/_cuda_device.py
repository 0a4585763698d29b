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
import inspect
from typing import Any

import numpy as np
from numba import cuda

from ._cuda_config import MIN_WARPS_PER_SM, TileConfig


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


def jit_options(threads: int) -> dict[str, Any]:
    """``cuda.jit`` options for a ``threads``-thread kernel: launch bounds (at most
    ``threads`` per block, at least enough blocks per multiprocessor for
    :data:`~convlab.kernels.cuda.MIN_WARPS_PER_SM` warps), from which ptxas caps the
    registers per thread so those blocks fit (:mod:`convlab.occupancy`).  Numba's
    built-in CUDA target has no ``launch_bounds``: it gets the same cap as
    ``max_registers``.  Nothing on the simulator, which has no registers."""
    if ".simulator" in getattr(cuda.jit, "__module__", ""):
        return {}
    from ..occupancy import min_blocks, register_cap

    if "launch_bounds" in inspect.signature(cuda.jit).parameters:
        return {"launch_bounds": (threads, min_blocks(threads, MIN_WARPS_PER_SM))}
    return {"max_registers": register_cap(threads, MIN_WARPS_PER_SM)}


@functools.cache
def tiled_kernel(dtype: str, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                 cfg: TileConfig) -> tuple[Any, int]:
    """``cuda_tiled`` for these compile-time constants (cached per combination):
    (kernel, threads per block)."""
    source, threads = tiled_source(dtype, kh, kw, sh, sw, dh, dw, cfg)
    return cuda.jit(**jit_options(threads))(source), threads


@functools.cache
def tiled_source(dtype: str, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                 cfg: TileConfig) -> tuple[Any, int]:
    """The Python function of ``cuda_tiled`` for these constants, not yet compiled, and
    its threads per block (``convlab.cuda_static`` compiles it offline for named GPUs)."""
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
    # Staging, with no division per staged element: each thread decodes where it starts
    # once, then steps by constants.  The patch is ROWS = ck*ph rows of pw columns: XC
    # threads across a row (consecutive threads, consecutive columns: coalesced), XR rows
    # at a time.  The weight tile is tk*ck (channel, input channel) pairs, each a
    # contiguous run of kh*kw taps in global memory; a thread copies whole runs.
    XC = min(PW, NT)
    XR = NT // XC
    ROWS = CK * PH
    ONE_COLUMN = XC == PW  # every thread copies one column of each of its rows
    PAIRS = TK * CK
    U = np.uint64  # unsigned indices: no negative-index wrap-around code (see below)

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
        n = U(cuda.blockIdx.z)
        tid = cuda.threadIdx.x
        tp = tid % PT  # which pixels (a warp spans neighbouring pixels: coalesced stores)
        tk = tid // PT  # which channels (a warp shares them: weight reads are broadcasts)
        sx_col, sx_row = tid % XC, tid // XC  # where this thread starts staging the patch
        sx_c, sx_p = sx_row // PH, sx_row % PH  # ... as (channel, row) of the patch
        sw_k, sw_c = tid // CK, tid % CK  # and the weights, as (channel, input channel)

        x_s = cuda.shared.array(XS, DT)
        w_s = cuda.shared.array(WS, DT)
        acc = cuda.local.array((RK, RP), DT)  # constant sizes: these live in registers
        wreg = cuda.local.array(RK, DT)
        xreg = cuda.local.array(RP, DT)
        xoff = cuda.local.array(RP, np.uint32)  # 32 bits: one register each
        wtk = U(tk * RK)
        for rp in range(RP):
            pix = tp + rp * PT
            xoff[rp] = np.uint32((pix // TW) * SH * PW + (pix % TW) * SW)  # window corner
        for rk in range(RK):
            kk = kb + tk * RK + rk
            bias = b[U(g * kg + kk)] if kk < kg else DT(0)
            for rp in range(RP):
                acc[rk, rp] = bias  # fused bias: the sum starts at it

        y0 = oy0 * SH - top  # input row, column of the patch's corner (may be < 0: padding)
        x0 = ox0 * SW - left
        col_in = x0 + sx_col >= 0 and x0 + sx_col < width  # (used when ONE_COLUMN)
        for c0 in range(0, cg, CK):  # the same trip count for every thread of the block
            # 1. stage the patch: consecutive threads, consecutive columns (coalesced).
            # Indices are cast to unsigned once they are known to be in range: Numba
            # supports negative indices, so a signed index costs a compare-and-select
            # per access, which these never need.
            if sx_row < XR:  # (the last NT % XC threads have no whole row to copy)
                c, py = sx_c, sx_p
                for row in range(sx_row, ROWS, XR):
                    ch = c0 + c
                    yy = y0 + py
                    row_in = ch < cg and yy >= 0 and yy < height
                    if ONE_COLUMN:  # a constant: the compiler keeps one branch
                        v = DT(0)
                        if row_in and col_in:
                            v = x[n, U(g * cg + ch), U(yy), U(x0 + sx_col)]
                        x_s[U(row * PW + sx_col)] = v
                    else:
                        for px in range(sx_col, PW, XC):
                            xx = x0 + px
                            v = DT(0)
                            if row_in and xx >= 0 and xx < width:
                                v = x[n, U(g * cg + ch), U(yy), U(xx)]
                            x_s[U(row * PW + px)] = v
                    py += XR % PH  # the next row: XR further on, without dividing
                    c += XR // PH
                    if py >= PH:
                        py -= PH
                        c += 1
            # ... and the weights: (channel, input channel) pairs, kh*kw taps each,
            # stored transposed as w_s[(c, p, q), k]
            k, c = sw_k, sw_c
            for _ in range(tid, PAIRS, NT):
                ch = c0 + c
                pair_in = kb + k < kg and ch < cg
                for p in range(KH):
                    for q in range(KW):
                        v = DT(0)
                        if pair_in:
                            v = w[U(g * kg + kb + k), U(ch), U(p), U(q)]
                        w_s[U(((c * KH + p) * KW + q) * WLD + k)] = v
                c += NT % CK
                k += NT // CK
                if c >= CK:
                    c -= CK
                    k += 1
            cuda.syncthreads()  # 2. the tile is complete before anyone reads it
            # 3. RK x RP multiply-adds per RK + RP shared-memory loads
            for c in range(CK):
                for p in range(KH):
                    for q in range(KW):
                        wrow = U(((c * KH + p) * KW + q) * WLD) + wtk
                        xb = U(c * PATCH + p * DH * PW + q * DW)
                        for rk in range(RK):
                            wreg[rk] = w_s[wrow + U(rk)]
                        for rp in range(RP):
                            xreg[rp] = x_s[xb + xoff[rp]]
                        for rk in range(RK):
                            for rp in range(RP):
                                acc[rk, rp] += wreg[rk] * xreg[rp]
            cuda.syncthreads()  # 4. everyone is done reading before the next chunk lands

        for rk in range(RK):  # only now may a thread skip work: no barrier follows
            kk = kb + tk * RK + rk
            if kk < kg:
                for rp in range(RP):
                    pix = tp + rp * PT
                    oy = oy0 + pix // TW
                    ox = ox0 + pix % TW
                    if oy < out_h and ox < out_w:
                        out[n, U(g * kg + kk), U(oy), U(ox)] = acc[rk, rp]

    return tiled, NT

