"""im2col backward: both gradients as matrix products, and ``col2im`` to fold back.

The forward (``im2col.py``) is ``out = W @ cols`` per group, where ``cols`` is the
lowered input (one column per output position, one row per tap (c, p, q)) and ``W``
the weight as a (K/g, (C/g)*kh*kw) matrix.  A matrix product has two gradients,
both matrix products again::

    grad_W    = grad_out @ cols.T          (K/g x positions) @ (positions x (C/g)*kh*kw)
    grad_cols = W.T @ grad_out             ((C/g)*kh*kw x K/g) @ (K/g x positions)

* **grad_weight** is the first.  Where the whole batch's columns fit the workspace
  cap, the input is lowered once on grad_output's own positions (no junk column:
  ``parallel_backward.lowered_taps``, channel-major, so a group's rows are one
  block), grad_output is laid out as the (K, N*Hout*Wout) matrix, and one GEMM per
  group is the answer.  Otherwise the input is lowered exactly as the forward does
  (the forward's own ``_lower``, flat rows with junk columns, zeroed here), chunk by
  chunk of images, and the chunks' GEMMs are summed.  The reduction runs over
  N*Hout*Wout, the long side: BLAS is at its best.  Threads: the result's rows
  (output channels) are cut into blocks, one Numba task per (group, block) calls a
  single-threaded BLAS and writes (whole batch) or adds (chunks) its product into
  its own rows of the result:
  every element summed by one task, chunk after chunk in a fixed order
  (deterministic, race-free, one weight-sized product buffer whatever the thread
  count).
* **grad_input** is the second, then **col2im**, the transpose of the lowering.
  Lowering *copied* input cell (y, x) into every column whose window covers it, so
  its gradient is the *sum* of those columns' entries: col2im adds each row (c, p, q)
  of ``grad_cols``, shifted by the tap's offset, back onto channel c of the padded
  input gradient.  Those adds overlap (neighbouring windows share cells), so two
  threads adding different columns into one cell would race.  Race-free by
  construction: every row (c, p, q) writes channel c only, so the work is split by
  channel: one Numba task per block of channels computes *its* rows of ``grad_cols``
  (a single-threaded BLAS GEMM, ``W.T``'s rows for its channels' taps) and at once
  adds them back, the kh*kw rows of a channel one after the other, in a fixed order;
  no other task touches those channels (``prange``, deterministic).  The rows are
  still in the core's cache when col2im reads them, and GEMM and col2im share one
  parallel region.  grad_output is laid out without junk columns here (Wo, not Ws,
  per row), so the GEMM makes no column col2im would skip.  Then the stride phases
  are merged back and the padding is cropped (the gradient of a zero is not needed).

One pool.  Every GEMM here runs on Numba's threads with a single-threaded BLAS (as
``im2col.py``'s, through :mod:`convlab.threads`): OpenBLAS's own threads are never
woken, so none of them spins, after this layer, on the cores the next one needs
(docs/design.md, "Concurrency"; tests/test_one_pool.py).

Chunks.  Like the forward, images (or, for one big image, bands of output rows)
are processed in chunks so that the column matrix and grad_output's matrix fit
under the workspace cap (``convlab.kernels.im2col.workspace_cap``), as many images
per chunk as fit: each chunk is one parallel region per GEMM, and fewer, bigger
chunks give the BLAS longer products.  The padded input (grad_weight) or padded input
gradient (grad_input) is one whole buffer, not tiled (a limit: a padding so large
that it alone is over the cap is not cut).

Cost.  The GEMMs do the forward's multiply-adds (grad_weight's chunked form times
Ws/Wo for its junk columns; its whole-batch form none).
grad_input also writes and re-reads a column matrix kh*kw times the size of the
input gradient (a task's rows re-read while still in its core's cache), and col2im's
adds are memory-bound, as the forward's lowering is.

Measure it: ``convlab bench --backward --suite resnet --kernels im2col,parallel,torch``,
and in a network, ``convlab bench --model resnet18 --train``.  Provisional (ResNet-18's
conv stack, batch 8, float32, 2 threads, a 2-core machine other jobs kept busy: in one
process, NumPy and torch imported first, this version and the one calling
``numpy.matmul`` swapped in turn, 8 interleaved training steps, medians): the backward
pass took 3.0 s against 5.4 s, and layers that do not run these kernels gained too (no
OpenBLAS thread left spinning by the layer before).

Source: Caffe's ``col2im_cpu`` and ``BaseConvolutionLayer::backward_cpu_gemm``;
K. Chellapilla, S. Puri, P. Simard (2006).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import parallel_region, single_threaded_blas
from .im2col import _auto_when, _lower, get_workspace_cap
from .parallel import phase_planes, plane_shape, tap_offsets
from .parallel_backward import lowered_taps
from .registry import register


def chunks(spec: ConvSpec, itemsize: int, cap: int | None = None) -> list[tuple[int, int, int,
                                                                               int]]:
    """(n0, nb, i0, nr): images n0..n0+nb, output rows i0..i0+nr, per GEMM chunk, so the
    column matrix and grad_output's matrix (``(C*kh*kw + K) x columns``) fit the cap:
    as many images as fit (few chunks: fewer parallel regions, longer GEMMs), else
    bands of rows of one image (at least one row)."""
    cap = get_workspace_cap() if cap is None else cap
    n, ho = spec.batch, spec.out_height
    ws = plane_shape(spec)[1]
    kh, kw = spec.kernel_size
    per_col = (spec.in_channels * kh * kw + spec.out_channels) * itemsize
    images = min(n, cap // (per_col * ho * ws))
    if images >= 1:
        return [(n0, min(images, n - n0), 0, ho) for n0 in range(0, n, images)]
    rows = max(1, min(ho, cap // (per_col * ws)))
    return [(n0, 1, i0, min(rows, ho - i0)) for n0 in range(n) for i0 in range(0, ho, rows)]


def workspace_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes allocated at once by the chunked form: the padded (phase-split) input or
    input gradient, and the biggest chunk's column matrix and grad_output matrix
    (grad_weight's whole-batch form stays under the cap, which bounds these too)."""
    hs, ws = plane_shape(spec)
    padded = spec.batch * spec.in_channels * spec.stride[0] * spec.stride[1] * hs * ws
    kh, kw = spec.kernel_size
    widest = max(nb * nr * ws for _, nb, _, nr in chunks(spec, itemsize))
    return (padded + (spec.in_channels * kh * kw + spec.out_channels) * widest) * itemsize


def _spread(grad_output: np.ndarray, n0: int, nb: int, i0: int, nr: int, ws: int,
            out: np.ndarray) -> np.ndarray:
    """grad_output's chunk as the (K, nb*nr*ws) matrix whose columns line up with the
    lowered input's: column ``b*nr*ws + i*ws + j`` is output (n0+b, i0+i, j), zero in
    the junk columns j >= Wo (none when ``ws`` is Wo: grad_input's compact layout)."""
    k_out, wo = grad_output.shape[1], grad_output.shape[3]
    mat = out[:, :nb * nr * ws]
    view = mat.reshape(k_out, nb, nr, ws)
    view[..., :wo] = grad_output[n0:n0 + nb, :, i0:i0 + nr].transpose(1, 0, 2, 3)
    if ws > wo:
        view[..., wo:] = 0
    return mat


# algo="auto", measured quiet (one process, batch 8, float32, 2 threads, 2-core Zen 4,
# ResNet-18's layers, each op alone; ms, im2col / parallel / polyphase):
# * grad_input, stride-2 3x3: 10.0 / 21.7 / 14.0 at 64->128@56, 7.7 / 22.6 / 9.6 (kept
#   transform) at 128->256@28, 7.5 / 26.3 / 10.1 at 256->512@14: one GEMM and col2im beat
#   polyphase's four im2col sub-problems; 3x3 stride 1 goes to polyphase's Winograd
#   (5-8 ms against im2col's 14-25), 1x1 stride 2 to polyphase's one GEMM (1.0 vs 2.5);
# * grad_weight, 1x1 stride 2: 1.5 / 3.5 / 3.4, 1.0 / 2.3 / 1.4, 0.9 / 2.8 / 1.1; k x k
#   layers, im2col lowering the whole batch without junk columns (_grad_weight_whole)
#   against parallel's dot products: 512@7 11.4 / 13.6, 256->512@14 s2 5.7 / 7.2,
#   128->256@28 s2 6.7 / 7.6, 256@14 12.2 / 12.2, but 128@28 14.7 / 13.3, 64@56 19.7 /
#   12.2, 64->128@56 s2 8.9 / 7.6, the stem 39.8 / 20.7: the forward's rule (256 output
#   channels and more) holds here too (`python scripts/bwd_ops.py`).
def _auto_when_grad_input(spec: ConvSpec) -> str | None:
    """Where auto prefers im2col's grad_input: the forward's rule (GEMMs at least
    256 x 256, plain 1x1 layers), and strided k x k layers with 32 or more channels
    each way (polyphase takes the thin ones and 1x1 layers)."""
    cg, kg = spec.in_channels // spec.groups, spec.out_channels // spec.groups
    if spec.stride != (1, 1) and spec.groups == 1 and min(cg, kg) >= AUTO_MIN_STRIDED_CHANNELS:
        return None
    return _auto_when(spec)


def _auto_when_grad_weight(spec: ConvSpec) -> str | None:
    """Where auto prefers im2col's grad_weight: 1x1 layers without groups (one GEMM,
    nothing lowered at stride 1), and the forward's rule (GEMMs at least 256 x 256)
    where the whole batch's columns fit the workspace (one GEMM, no junk column).  The
    rule sees the spec, not the dtype: it counts float32 columns (a float64 call whose
    columns do not fit runs the chunked form, right but slower)."""
    if spec.kernel_size == (1, 1) and spec.groups == 1:
        return None
    why = _auto_when(spec)
    if why is None and not whole_lowering_fits(spec, 4):
        why = ("the whole batch's columns would not fit the workspace cap: the chunked "
               "GEMMs with junk columns were slower than parallel's dot products")
    return why


AUTO_MIN_STRIDED_CHANNELS = 32


@register("im2col", op="grad_weight", rtol=1e-5, auto_rank=20, workspace=workspace_bytes,
          auto_when=lambda spec: _auto_when_grad_weight(spec),
          description="grad_output @ lowered input^T per group and chunk: single-threaded "
                      "BLAS GEMMs on Numba's threads, rows split")  # fmt: skip
def grad_weight_im2col(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    if 0 in (spec.batch, spec.in_channels, spec.out_height, spec.out_width):
        return np.zeros(spec.weight_shape, dtype=x.dtype)  # no product was made: torch's zeros
    g = spec.groups
    k_out, wo = spec.out_channels, spec.out_width
    kg, rg = k_out // g, spec.reduction_length
    if whole_lowering_fits(spec, x.dtype.itemsize):
        return _grad_weight_whole(x, grad_output, spec)
    xs = phase_planes(x, spec)
    ws = xs.shape[5]
    off = tap_offsets(spec, xs.shape[4], ws)
    xf = xs.reshape(-1)
    chan_block = (spec.in_channels // g) * xs[0, 0].size
    plan = chunks(spec, x.dtype.itemsize)
    widest = max(nb * nr * ws for _, nb, _, nr in plan)
    # flat buffers, viewed per chunk as C-contiguous (rows, width) matrices: Numba's
    # np.dot needs contiguous operands (a narrower last chunk would be a strided slice)
    cols_flat = np.empty(g * rg * widest, dtype=x.dtype)
    gmat_flat = np.empty(k_out * widest, dtype=x.dtype)
    # The GEMM's rows (grad_W's K/g output channels) are split across the threads.
    # Splitting the bigger side instead (grad_W^T = cols @ grad_out^T, C/g*kh*kw rows)
    # was tried: quiet, one process, batch 8, it took 51 ms against 24 at 512@7 and was
    # slower on every ResNet-18 layer measured (256@14, 128->256 s2, 256->512 s2).
    m, n = kg, rg
    part = np.empty((g, m, n), dtype=x.dtype)  # one chunk's product: the weight's size
    grad_w = np.zeros((g, m, n), dtype=x.dtype)
    rows = _row_block(m, g, numba.get_num_threads())
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas():
        for n0, nb, i0, nr in plan:
            length, width = nr * ws, nb * nr * ws
            cols = cols_flat[:g * rg * width].reshape(g * rg, width)
            _lower(xf, cols, xs[0].size, chan_block, off, rg, n0, nb, i0 * ws, length)
            # junk columns read real inputs past the row's end: zero them, so that a
            # NaN/Inf there meets 0 * 0 and not 0 * Inf
            cols.reshape(g * rg, nb * nr, ws)[..., wo:] = 0
            gm = _spread(grad_output, n0, nb, i0, nr, ws,
                         gmat_flat[:k_out * width].reshape(k_out, width))
            a, b = gm.reshape(g, kg, width), cols.reshape(g, rg, width)
            with parallel_region():  # see convlab/threads.py
                _gemm_nt(a, b, part, grad_w, rows, True)
    return grad_w.reshape(spec.weight_shape)


def whole_lowering_fits(spec: ConvSpec, itemsize: int) -> bool:
    """Whether grad_weight lowers the whole batch at once, on grad_output's own
    positions (no junk column), under the workspace cap."""
    kh, kw = spec.kernel_size
    columns = spec.batch * spec.out_height * spec.out_width
    return (spec.in_channels * kh * kw + spec.out_channels) * columns * itemsize \
        <= get_workspace_cap()


def _grad_weight_whole(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """grad_W = grad_out @ cols.T in one GEMM per group: ``cols`` the whole batch's
    columns without junk (``parallel_backward.lowered_taps``: channel-major, so group
    g's rows are one block), grad_output as the (K, N*Ho*Wo) matrix.  Measured quiet at
    512@7 (batch 8): 10.7 ms for the GEMM against 18 for the chunked, junk-column form."""
    g, k_out = spec.groups, spec.out_channels
    kg, rg = k_out // g, spec.reduction_length
    cols = lowered_taps(x, spec)  # (C, kh*kw, columns rounded up to whole vectors)
    width = cols.shape[2]
    gm = np.zeros((k_out, width), dtype=x.dtype)
    gm[:, :spec.batch * spec.out_height * spec.out_width] = \
        grad_output.transpose(1, 0, 2, 3).reshape(k_out, -1)
    grad_w = np.empty((g, kg, rg), dtype=x.dtype)
    rows = _row_block(kg, g, numba.get_num_threads())
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas(), \
            parallel_region():
        _gemm_nt(gm.reshape(g, kg, width), cols.reshape(g, rg, width), grad_w, grad_w, rows,
                 False)
    return grad_w.reshape(spec.weight_shape)


def _row_block(rows: int, groups: int, threads: int) -> int:
    """Rows per GEMM task, so that the ``groups`` products of ``rows`` rows give at
    least ``threads`` tasks where the rows allow (equal blocks: no thread waits for a
    longer one)."""
    per_group = max(1, min(rows, -(-threads // groups)))
    return max(1, -(-rows // per_group))


@njit(parallel=True, cache=True)
def _gemm_nt(a3, b3, part, acc, rows, add):  # pragma: no cover - compiled
    """acc[grp] (+)= a3[grp] @ b3[grp].T for every group: one task per (group, block of
    ``rows`` rows of the result), each a single-threaded BLAS GEMM (the transposed
    operand is passed to the BLAS as such, no copy).  ``add``: into its rows of
    ``part``, then added into the same rows of ``acc`` (a chunk of the sum); else
    straight into ``acc`` (the whole batch at once).  Every result element is written
    by one task and summed chunk after chunk in the caller's fixed order: race-free and
    deterministic, and no per-thread copy of the weight gradient."""
    groups, m = a3.shape[0], a3.shape[1]
    blocks = (m + rows - 1) // rows
    for t in prange(groups * blocks):
        grp = t // blocks
        lo = (t % blocks) * rows
        hi = min(m, lo + rows)
        if add:
            dst = part[grp, lo:hi]
            np.dot(a3[grp, lo:hi], b3[grp].T, dst)
            acc[grp, lo:hi] += dst
        else:
            np.dot(a3[grp, lo:hi], b3[grp].T, acc[grp, lo:hi])


@register("im2col", op="grad_input", rtol=1e-5, auto_rank=20, workspace=workspace_bytes,
          auto_when=lambda spec: _auto_when_grad_input(spec),
          description="W^T @ grad_output per group, then col2im: one Numba task per block "
                      "of channels runs its rows' single-threaded BLAS GEMM and adds them "
                      "back onto its channels (race-free)")  # fmt: skip
def grad_input_im2col(grad_output: np.ndarray, weight: np.ndarray,
                      spec: ConvSpec) -> np.ndarray:
    if 0 in (spec.batch, spec.in_channels, spec.out_height, spec.out_width):
        # no product was made: torch's zeros
        return np.zeros((spec.batch, spec.in_channels, spec.height, spec.width),
                        dtype=grad_output.dtype)
    g = spec.groups
    k_out, wo = spec.out_channels, spec.out_width
    kg, rg = k_out // g, spec.reduction_length
    cg = spec.in_channels // g
    hs, ws = plane_shape(spec)
    sh, sw = spec.stride
    grad_xs = np.zeros((spec.batch, spec.in_channels, sh, sw, hs, ws), dtype=grad_output.dtype)
    off = tap_offsets(spec, hs, ws)
    chan_block = cg * sh * sw * hs * ws
    itemsize = grad_output.dtype.itemsize
    plan = chunks(spec, itemsize)
    widest = max(nb * nr * ws for _, nb, _, nr in plan)
    cols_flat = np.empty(g * rg * widest, dtype=grad_output.dtype)
    gmat_flat = np.empty(k_out * widest, dtype=grad_output.dtype)
    # W^T per group, (g, rg, kg): a task's rows (its channels' taps) are contiguous
    wt = np.ascontiguousarray(weight.reshape(g, kg, rg).transpose(0, 2, 1))
    threads = numba.get_num_threads()
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas():
        for n0, nb, i0, nr in plan:
            # grad_output without junk columns: the GEMM makes no column col2im skips
            # (Ws/Wo fewer multiply-adds: 9/7 at ResNet's 7x7 layers)
            width = nb * nr * wo
            gm = _spread(grad_output, n0, nb, i0, nr, wo,
                         gmat_flat[:k_out * width].reshape(k_out, width))
            per = channel_block(cg, g, rg // cg, width, itemsize, threads)
            with parallel_region():  # see convlab/threads.py
                _gemm_col2im(wt, gm.reshape(g, kg, width),
                             cols_flat[:g * rg * width].reshape(g * rg, width),
                             grad_xs.reshape(-1), cg, off, chan_block,
                             sh * sw * hs * ws * spec.in_channels, n0, nb, i0 * ws, nr, ws,
                             spec.out_width, per)  # fmt: skip
    return _merge_and_crop(grad_xs, spec)


# A task's rows of the column matrix (its channels' taps x the chunk's columns) are
# added back right after its GEMM wrote them: small enough to stay in L2 (Zen 4: 1 MiB
# per core) for col2im, yet at least MIN_TASK_ROWS rows, below which BLAS's GEMM
# runs far from its peak (every call packs the whole (K/g, columns) operand).
TASK_BYTES = 256 * 1024
MIN_TASK_ROWS = 64


def channel_block(cg: int, groups: int, taps: int, width: int, itemsize: int,
                  threads: int) -> int:
    """Input channels per task of :func:`_gemm_col2im`: L2-sized blocks (``TASK_BYTES``)
    of at least ``MIN_TASK_ROWS`` rows, and, where the channels allow, at least
    ``threads`` tasks in all (their number rounded up to a multiple of ``threads`` first:
    near-equal shares)."""
    fit = max(TASK_BYTES // (taps * width * itemsize), -(-MIN_TASK_ROWS // taps), 1)
    blocks = max(-(-cg // fit), -(-threads // groups))
    if groups == 1:
        blocks = -(-blocks // threads) * threads
    per = -(-cg // min(cg, blocks))
    while per > 1 and groups * -(-cg // per) < threads:  # rounding left a thread idle
        per -= 1
    return per


@njit(parallel=True, cache=True)
def _gemm_col2im(wt, gm3, cols, gxf, cg, off, chan_block, img, n0, nb, m0, nr, ws, wo,
                 per):  # pragma: no cover - compiled
    """One task per (group, block of ``per`` channels): its rows of the column matrix,
    ``cols[rows] = W^T[rows] @ grad_output`` (a single-threaded BLAS GEMM), then col2im
    of exactly those rows: ``gxf[(n0+b)*img + grp*chan_block + off[r] + m0 + i*ws + j]
    += cols[grp*rg + r, b*nr*wo + i*wo + j]`` for each image b, tap row r of its
    channels, j < wo (grad_output's columns are compact: no junk).  Rows (c, p, q)
    write channel c only, and no two tasks share a channel: race-free; each cell's
    adds come in tap order: deterministic."""
    groups, rg = wt.shape[0], wt.shape[1]
    taps = rg // cg
    length = nr * wo
    blocks = (cg + per - 1) // per
    for t in prange(groups * blocks):  # disjoint channels: no two tasks add to one cell
        grp = t // blocks
        c0 = (t % blocks) * per
        c1 = min(cg, c0 + per)
        r0, r1 = c0 * taps, c1 * taps
        rows = cols[grp * rg + r0:grp * rg + r1]
        np.dot(wt[grp, r0:r1], gm3[grp], rows)
        for b in range(nb):
            base = (n0 + b) * img + grp * chan_block + m0
            for r in range(r0, r1):
                src = rows[r - r0]
                dst0 = base + off[r]
                for i in range(nr):
                    s = b * length + i * wo
                    d = dst0 + i * ws
                    for j in range(wo):
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
