"""Polyphase backward: both gradients through the fast GEMM-based kernels.

``parallel_backward.py`` turns grad_input into a forward convolution of the
*zero-dilated* grad_output with the flipped kernel: a stride-s layer then multiplies
s_h*s_w times more zeros than numbers.  This file splits the work by stride phase
instead, so nothing multiplies an inserted zero, and hands every piece to the
kernels that are fast for the forward: Winograd, BLAS.  Diff it against
parallel_backward.py.

**grad_input: s_h*s_w stride-1 forward convolutions.**  Along one axis the forward
reads padded row ``i*s + p*d`` for output row i and tap p, so unpadded input row
``y = s*y' + a`` (phase a = 0..s-1) receives ``go[i] * w[p]`` exactly from the taps
with ``i*s + p*d - top = s*y' + a``, i.e. the taps p with ``(a + top - p*d) % s == 0``,
each from grad_output row ``i = y' + e_p``, ``e_p = (a + top - p*d) / s``.  Taken in
descending p, those taps are evenly spaced and their ``e_p`` climb by
``d / gcd(s, d)``: phase a of the input gradient is a *stride-1* correlation of
grad_output with the flipped sub-kernel ``w[taps]`` (dilation ``d / gcd(s, d)``),
zero padding ``-e_first`` before (a negative padding crops grad_output's first rows:
outputs whose window lay in the padding feed no input row) and what makes the result
as long as the phase after.  The channels swap roles as in parallel_backward.py: the
sub-kernel read as (C, K/groups, ., .) maps K channels to C, group by group.

* stride 1: one phase, the whole layer; a 3x3 layer is a 3x3 forward convolution,
  which the forward's ``algo="auto"`` rule gives to Winograd F(4x4, 3x3) (4x fewer
  multiplies), a 1x1 layer ``pointwise`` (one GEMM per image, no lowering copy);
* stride 2, 3x3: four sub-problems with 2x2, 2x1, 1x2, 1x1 kernels; the 7x7 stem:
  4x4, 4x3, 3x4, 3x3 (that one Winograd again);
* 1x1 stride 2: one phase has the single tap, the other three get no gradient
  (the input pixels the layer skips): one GEMM, scattered into every other pixel.

Each sub-problem is a :class:`ConvSpec` run by the forward kernel that ``algo="auto"``
picks for it (``registry.choose``; the rule measured for the forward, so this file
gets faster whenever the forward does), BLAS's ``im2col`` where that pick would be the
direct ``parallel`` kernel (:func:`sub_kernel`).  The transformed flipped weights (Winograd's
``U``) depend on the weight and the layer's hyper-parameters only:
:func:`transform_weight_grad_input` computes them (the kernel's ``transform_weight``),
and ``run(..., transformed_weight=)`` skips that work and the flipped copies:
``Conv2d.backward`` keeps them in the layer's ``WeightCache`` while the weight does not
change (docs/design.md, "Data flow"); the functional ``conv2d_input`` and
``conv_transpose2d`` compute them per call.

**grad_weight, 3x3 stride 1: Winograd read backwards.**  The forward's F(4x4, 3x3) is
linear in the filter, so its transposes give the weight gradient from the same input
transform: ``G^T [(A dY A^T) * (B^T d B)] G`` summed over tiles, 36 GEMMs over the
tiles, 4x fewer multiplies (``winograd_grad_weight.py``, where the algorithm is told).

**grad_weight, every other layer: GEMMs over chunks of positions, every tap at once.**
``gw[k, c, p, q] = sum_{n,i,j} go[n,k,i,j] * xpad[n, c, i*s + p*d, j*s + q*d]``: for a
fixed tap (p, q) that is a matrix product, grad_output as a (K, N*Ho*Wo) matrix times
the input shifted by the tap, an (N*Ho*Wo, C) matrix.  With the input split into
stride phases channel-major and grad_output spread over the same (n, Hs, Ws) planes
with zeros outside its Ho x Wo corner (``parallel_backward``'s layout:
``channel_major_planes``, ``plane_tap_offsets``), the shifted input of every tap is a
column offset into one (C, N*s_h*s_w*Hs*Ws) matrix.  One tap's GEMM has a (K/g) x (C/g)
result, too narrow for BLAS, so the positions are cut into chunks (``CHUNK_BYTES``) and
each chunk's input is copied once per tap, stacked: a (taps*C/g, chunk) block, so one
GEMM per chunk gives a (K/g) x (taps*C/g) slice of the weight gradient (the copy is 1/K
of the multiply-adds), added to the running sum.  Threads: the output channels are cut
into row blocks (:func:`row_blocks`), one Python worker per Numba thread owns some of
them and runs a one-thread BLAS (threadpoolctl, as Winograd holds it), even when there
is only one worker, so OpenBLAS's own threads are never woken.  Every result element
is summed by one worker, chunk after chunk in a fixed order: deterministic, race-free,
and no per-thread copy of the weight gradient (each worker keeps one chunk's block and
one (rows, taps*C/g) product).

Cost.  grad_input: the useful multiply-adds (fewer through Winograd), plus, for
stride > 1, one strided copy of each phase into the input gradient, and each
sub-problem's own costs (``im2col`` lowers its input: kh*kw copies of grad_output's
phase-share).  grad_weight, 3x3 stride 1: a quarter of the direct multiply-adds in 36
GEMMs, plus transforms writing 2.25 times the input and grad_output
(``winograd_grad_weight.py``); every other layer: N*K*(C/g)*kh*kw*Hs*Ws multiply-adds
(the useful ones plus the junk columns ``Ws - Wo`` and rows ``Hs - Ho``, all zeros of
grad_output), one copy of the input (phase split) and of grad_output (spread), kh*kw
copies of the input in chunks, at OpenBLAS's sgemm speed, which on ResNet's stride-2
layers was below the direct ``parallel`` kernel's (see the auto rule below).  A GEMM of
few rows or columns (3-channel stems, depthwise layers: one per group and tap) runs far
below BLAS's peak; ``algo="auto"`` keeps those on the other kernels (``_auto_when_*``).

Measure it: ``convlab bench --backward --suite resnet --kernels
polyphase,im2col,parallel,torch`` (grad_input + grad_weight + grad_bias per layer,
and ``conv_transpose2d``, which runs on grad_input kernels).

Limits: none; every stride, padding, dilation, group count, both dtypes, zero
channels.  NaN/Inf: the sub-convolutions' zero padding and Winograd's transforms
multiply the weight by zeros and mix a tile's values (grad_input), and the junk
positions multiply the input by zeros and Winograd's transforms mix a tile's values
(grad_weight), so a NaN/Inf can reach results
that PyTorch leaves finite (``nonfinite`` below; ``algo="auto"`` passes these kernels
over for such input).

Source: the polyphase decomposition of a strided (transposed) convolution, e.g.
W. Shi et al., "Is the deconvolution layer the same as a convolutional layer?" (2016),
and Caffe's ``BaseConvolutionLayer::weight_cpu_gemm``; Lavin & Gray (2016) for the
Winograd sub-problems.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ..shapes import ConvSpec
from ..threads import single_threaded_blas
from .parallel_backward import channel_major_planes, plane_tap_offsets
from .registry import Kernel, NonFinite, choose, get, register
from .winograd_grad_weight import grad_weight_winograd
from .winograd_grad_weight import supports as winograd_supports
from .winograd_grad_weight import workspace_bytes as winograd_workspace


# ---------------------------------------------------------------- grad_input
@dataclass(frozen=True)
class AxisPhase:
    """One stride phase ``a`` of one axis of the input gradient: input rows a, a+s, ...

    ``taps``: the forward's taps that reach it, in descending order (the flipped
    sub-kernel); ``crop_lo``/``crop_hi``: grad_output rows dropped at each end (a
    negative padding); ``pad_lo``/``pad_hi``: the sub-problem's zero padding;
    ``dilation``: the sub-kernel's; ``length``: rows in the phase."""

    taps: tuple[int, ...]
    crop_lo: int
    crop_hi: int
    pad_lo: int
    pad_hi: int
    dilation: int
    length: int


def axis_phases(size: int, out: int, k: int, s: int, d: int, top: int) -> list[AxisPhase | None]:
    """For each phase a = 0..s-1 of an axis (input size ``size``, grad_output size
    ``out``), its sub-problem, or None when no grad_output row reaches it (the whole
    phase's gradient is 0).  See the module docstring for the algebra."""
    phases: list[AxisPhase | None] = []
    dd = d // math.gcd(s, d)
    for a in range(s):
        length = len(range(a, size, s))
        taps = tuple(p for p in range(k - 1, -1, -1) if (a + top - p * d) % s == 0)
        if length == 0 or not taps:
            phases.append(None)
            continue
        e_first = (a + top - taps[0] * d) // s  # exact: the lowest grad_output offset
        crop_lo, pad_lo = max(0, e_first), max(0, -e_first)
        pad_hi = length + dd * (len(taps) - 1) - (out - crop_lo) - pad_lo
        crop_hi = max(0, -pad_hi)
        if out - crop_lo - crop_hi <= 0:  # every grad_output row it could read is cut
            phases.append(None)
            continue
        phases.append(AxisPhase(taps, crop_lo, crop_hi, pad_lo, max(0, pad_hi), dd, length))
    return phases


def _sub_spec(spec: ConvSpec, ph: AxisPhase, pw: AxisPhase) -> ConvSpec:
    """The stride-1 forward convolution computing input phase (ph, pw): K -> C channels."""
    return ConvSpec(batch=spec.batch, in_channels=spec.out_channels,
                    height=spec.out_height - ph.crop_lo - ph.crop_hi,
                    width=spec.out_width - pw.crop_lo - pw.crop_hi,
                    out_channels=spec.in_channels, kernel_size=(len(ph.taps), len(pw.taps)),
                    padding=(ph.pad_lo, ph.pad_hi, pw.pad_lo, pw.pad_hi),
                    dilation=(ph.dilation, pw.dilation), groups=spec.groups)


def _sub_weight(weight: np.ndarray, ph: AxisPhase, pw: AxisPhase, groups: int) -> np.ndarray:
    """The flipped sub-kernel, channels swapped per group: (C, K/groups, nh, nw)."""
    k_out, cg = weight.shape[:2]
    kg = k_out // groups
    sub = weight[:, :, list(ph.taps)][:, :, :, list(pw.taps)]  # descending taps: flipped
    sub = sub.reshape(groups, kg, cg, len(ph.taps), len(pw.taps)).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(sub).reshape(groups * cg, kg, len(ph.taps), len(pw.taps))


def sub_kernel(sub: ConvSpec) -> Kernel:
    """The forward kernel for a phase's sub-problem: the forward rule's pick
    (``registry.choose``: Winograd for 3x3 sub-kernels with enough channels, FFT where
    its cost model says so, ``depthwise``), except that its direct ``parallel`` pick is
    replaced by ``im2col`` (BLAS) when the GEMM has at least AUTO_MIN_CHANNELS rows
    (C/groups: the sub-problem's output channels).  Provisional measurements
    (``convlab bench --backward``, ResNet-18 layers): ``parallel`` on the 1x2, 2x1, 2x2
    sub-kernels of a stride-2 3x3 layer took 2-4x im2col's time, but on the 7x7 stem's
    sub-problems (3 output channels: a 3-row GEMM, BLAS's worst shape) im2col took 60x
    parallel's.  Every kernel used here has ``rtol`` <= this file's 5e-5."""
    kernel = choose(sub).kernel
    thin = sub.out_channels // sub.groups < AUTO_MIN_CHANNELS
    return get("im2col") if kernel.name in ("parallel", "naive") and not thin else kernel


@dataclass(frozen=True)
class Phase:
    """Input phase (a, b): its sub-problem, the forward kernel that runs it, the flipped
    sub-kernel and that kernel's transform of it (None if it has none)."""

    a: int
    b: int
    rows: slice  # grad_output's rows and columns the sub-problem reads
    cols: slice
    spec: ConvSpec
    kernel: Kernel
    weight: np.ndarray
    transformed: Any = None


def phases(weight: np.ndarray, spec: ConvSpec, transform: bool = False,
           kept: list[Phase] | None = None) -> list[Phase]:
    """Every input phase some grad_output reaches, with its sub-problem and kernel
    (the forward's ``algo="auto"`` pick); ``transform=True`` also computes each
    kernel's weight transform.  ``kept`` (:func:`transform_weight_grad_input` of this
    weight): a kept phase whose kernel and sub-problem are this call's is used as it
    is, its flipped sub-kernel and transform not made again."""
    old = {(p.a, p.b): p for p in kept or ()}
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    rows = axis_phases(spec.height, spec.out_height, kh, sh, dh, spec.padding[0])
    cols = axis_phases(spec.width, spec.out_width, kw, sw, dw, spec.padding[2])
    out = []
    for a, ph in enumerate(rows):
        for b, pw in enumerate(cols):
            if ph is None or pw is None:
                continue
            sub = _sub_spec(spec, ph, pw)
            kernel = sub_kernel(sub)
            same = old.get((a, b))
            if same is not None and same.kernel is kernel and same.spec == sub:
                out.append(same)
                continue
            wsub = _sub_weight(weight, ph, pw, spec.groups)
            tw = (kernel.transform_weight(wsub, sub)
                  if transform and kernel.transform_weight is not None else None)
            rs = slice(ph.crop_lo, spec.out_height - ph.crop_hi)
            cs = slice(pw.crop_lo, spec.out_width - pw.crop_hi)
            out.append(Phase(a, b, rs, cs, sub, kernel, wsub, tw))
    return out


def transform_weight_grad_input(weight: np.ndarray, spec: ConvSpec) -> list[Phase]:
    """The flipped sub-kernels of every phase and their forward kernels' transforms
    (Winograd's U of the flipped 3x3 weight): weight and hyper-parameters only, so a
    caller may keep them while the weight does not change and pass them as
    ``grad_input_polyphase(..., transformed_weight=)``.  (The phases' kernels are the
    forward rule's pick for ``spec``'s sizes; a kept list is used only where its kernel
    is the one picked now.)"""
    return phases(weight, spec, transform=True)


# algo="auto", measured quiet: ResNet-18's layers, batch 8, float32, 2 threads, one
# process, each kernel alone (`python scripts/bwd_ops.py`; ms; torch's whole backward in
# brackets):
# * grad_input, 3x3 stride 1, one Winograd F(4,3) phase: 64@56 5.6 (parallel 11.2,
#   im2col 24.9) [19.1], 128@28 5.6 [17.1], 256@14 9.5, transform kept 5.9 (im2col 13.7)
#   [17.1]; at 512@7 (32 tiles per call) transforming the flipped weight, 512 x 512 x 36
#   values, on every call is not paid back: 23.0 against im2col's 17.8, but kept (as
#   Conv2d.backward keeps it) 7.5 [19.6]: the tile rule holds for per-call use only
#   (``auto_when_per_call``);
# * 1x1 stride 2, one GEMM per image and a scatter: 1.0 / 0.9 / 1.0 ms at 64->128@56,
#   128->256@28, 256->512@14 against im2col's 2.5 / 1.5 / 1.3;
# * the thin 7x7 stem: 31.1 against im2col's 61.8 and parallel's 68.8 [59.6];
# * stride-2 3x3 layers with 64 channels or more: im2col's one GEMM and col2im beat the
#   four sub-problems, 10.0 / 7.7 / 7.5 against 14.0 / 9.6 / 10.1 (kept), so auto
#   leaves them to im2col;
# * grad_weight: see below.
AUTO_MIN_CHANNELS = 32
AUTO_MIN_TILES = 64  # output tiles of 4x4 per call for grad_input's Winograd route


def _auto_when_grad_input(spec: ConvSpec) -> str | None:
    """Where auto prefers polyphase's grad_input (see the measurements above)."""
    cg, kg = spec.in_channels // spec.groups, spec.out_channels // spec.groups
    if spec.stride != (1, 1) and spec.groups == 1:
        if spec.kernel_size != (1, 1) and min(cg, kg) >= AUTO_MIN_CHANNELS:
            return ("its sub-problems run on im2col, slower than im2col's own grad_input "
                    "(one GEMM and col2im), which auto picks here")
        return None  # a thin stem, a 1x1 layer: else parallel, which multiplies dilated zeros
    if min(cg, kg) < AUTO_MIN_CHANNELS:
        return (f"only {cg} input / {kg} output channels per group (< {AUTO_MIN_CHANNELS}): "
                "its sub-problem would run on parallel's forward, as parallel's grad_input")
    if spec.kernel_size == (1, 1):
        return None
    if spec.kernel_size != (3, 3) or spec.stride != (1, 1) or spec.dilation != (1, 1):
        return ("its sub-problems run on im2col, as fast as im2col's own grad_input (only "
                "3x3 stride-1 layers go to Winograd, and 1x1 layers to one GEMM)")
    return None


def _auto_when_grad_input_per_call(spec: ConvSpec) -> str | None:
    """Where the flipped weight's Winograd transform, made on every call (conv2d_input;
    ``Conv2d.backward`` keeps it), is paid back: enough tiles share it."""
    if spec.kernel_size != (3, 3) or spec.stride != (1, 1) or spec.dilation != (1, 1):
        return None
    tiles = spec.batch * -(-spec.height // 4) * -(-spec.width // 4)
    if tiles < AUTO_MIN_TILES:
        return (f"only {tiles} Winograd tiles (< {AUTO_MIN_TILES}): transforming the "
                "flipped weight on every call is not paid back (Conv2d keeps it)")
    return None


@register("polyphase", op="grad_input", rtol=5e-5, auto_rank=10,
          transform_weight=transform_weight_grad_input,
          nonfinite=NonFinite.SUB_CONVOLUTIONS, auto_when=lambda spec: _auto_when_grad_input(spec),
          auto_when_per_call=lambda spec: _auto_when_grad_input_per_call(spec),
          description="s_h*s_w stride-1 forward convolutions of grad_output with the "
                      "flipped sub-kernels, on the forward's fast kernels "
                      "(Winograd for 3x3, BLAS GEMMs)")  # fmt: skip
def grad_input_polyphase(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec,
                         transformed_weight: list[Phase] | None = None) -> np.ndarray:
    shape = (spec.batch, spec.in_channels, spec.height, spec.width)
    if 0 in shape or spec.out_channels == 0:  # nothing to compute: torch's zeros
        return np.zeros(shape, dtype=grad_output.dtype)
    todo = phases(weight, spec, kept=transformed_weight)
    sh, sw = spec.stride
    whole = len(todo) == 1 and sh == sw == 1  # stride 1: the one phase is the answer
    grad = None if whole else np.zeros(shape, dtype=grad_output.dtype)
    for ph in todo:
        go = grad_output[:, :, ph.rows, ph.cols]
        if not go.flags.c_contiguous:
            go = np.ascontiguousarray(go)
        ph.kernel.check(ph.spec)
        part = ph.kernel.execute(go, ph.weight, None, ph.spec, ph.transformed)
        if whole:
            return part
        grad[:, :, ph.a::sh, ph.b::sw] = part  # type: ignore[index]
    return grad  # type: ignore[return-value]


# ---------------------------------------------------------------- grad_weight
# grad_weight, measured quiet (ms, each kernel alone, batch 8, interleaved medians):
# Winograd's weight gradient (winograd_grad_weight.py) against parallel's dot products
# at 64@56 9.4 / 13.2, 32->64@56 6.1 / 7.6, 32@56 3.6 / 3.9, 128@28 6.7 / 13.0; at
# 16@112 its transforms (36 values per tile for 16 channels) eat the 4x fewer
# multiplies: 5.7 / 5.3.  Against im2col's whole-batch GEMM: 256@14 6.2-6.8 / 11.9,
# 512@7 9.1 / 10.9.  The GEMMs over chunks (k x k layers other than 3x3 stride 1, 1x1
# layers with groups) were behind parallel or im2col on every k x k layer and behind
# im2col on plain 1x1 ones (3.4 / 1.4 / 1.1 against 1.5 / 1.0 / 0.9).
AUTO_MIN_WINOGRAD_CHANNELS = 32


def _auto_when_grad_weight(spec: ConvSpec) -> str | None:
    """Where auto prefers this grad_weight (see the measurements above)."""
    cg, kg = spec.in_channels // spec.groups, spec.out_channels // spec.groups
    if winograd_supports(spec):
        if min(cg, kg) < AUTO_MIN_WINOGRAD_CHANNELS:
            return (f"only {cg} input / {kg} output channels per group (< "
                    f"{AUTO_MIN_WINOGRAD_CHANNELS}): Winograd's transforms outweigh its "
                    "4x fewer multiplies")
        return None
    if spec.kernel_size != (1, 1):
        return ("its GEMMs over chunks were level with or behind parallel and im2col on "
                "every k x k layer measured (ResNet-18's stride-2 3x3 and the stem)")
    if spec.groups == 1:
        return "im2col's one GEMM (nothing lowered) was faster on every 1x1 layer measured"
    if min(cg, kg) < AUTO_MIN_CHANNELS:
        return (f"only {cg} input / {kg} output channels per group (< {AUTO_MIN_CHANNELS}): "
                "its GEMMs would be too thin for BLAS")
    return None


def _grad_weight_workspace(spec: ConvSpec, itemsize: int) -> int:
    """Winograd's V, W and M on 3x3 stride-1 layers (the GEMMs over chunks elsewhere are
    not counted: their copies of the input and grad_output, as before)."""
    return winograd_workspace(spec, itemsize) if winograd_supports(spec) else 0


@register("polyphase", op="grad_weight", rtol=5e-5, auto_rank=15, workspace=_grad_weight_workspace,
          nonfinite=NonFinite.JUNK_OR_TILES, auto_when=lambda spec: _auto_when_grad_weight(spec),
          description="3x3 stride 1: Winograd F(4x4,3x3)'s transforms read backwards, 36 "
                      "GEMMs over the tiles; else BLAS GEMMs over chunks of positions, "
                      "every tap at once")  # fmt: skip
def grad_weight_polyphase(x: np.ndarray, grad_output: np.ndarray,
                          spec: ConvSpec) -> np.ndarray:
    k_out, cg = spec.out_channels, spec.in_channels // spec.groups
    kh, kw = spec.kernel_size
    if 0 in (spec.batch, k_out, cg, spec.out_height, spec.out_width):
        return np.zeros(spec.weight_shape, dtype=x.dtype)  # an empty sum: torch's zeros
    if winograd_supports(spec):
        return grad_weight_winograd(x, grad_output, spec)
    xt = channel_major_planes(x, spec)
    c_in, _, n, hs, ws = xt.shape
    ho, wo = spec.out_height, spec.out_width
    gt = np.zeros((k_out, n, hs, ws), dtype=x.dtype)  # grad_output on the input's planes
    gt[:, :, :ho, :wo] = grad_output.transpose(1, 0, 2, 3)
    off = plane_tap_offsets(spec, n * hs * ws, hs, ws)
    length = (n - 1) * hs * ws + (ho - 1) * ws + wo  # past the last output: only zeros
    xf, gf = xt.reshape(c_in, -1), gt.reshape(k_out, -1)
    gw = np.zeros((k_out, kh * kw, cg), dtype=x.dtype)
    threads = numba.get_num_threads()
    blocks = row_blocks(k_out, spec.groups, threads)
    chunk = chunk_length(kh * kw * cg, x.dtype.itemsize)
    jobs = [blocks[t::threads] for t in range(min(threads, len(blocks)))]
    # NaN/Inf propagate as in every other kernel; matmul would also warn about them.
    # Each worker owns whole rows of gw and calls a one-thread BLAS; so does a single
    # worker (Numba on one thread): OpenBLAS's own threads, once woken, would spin on
    # the cores the next layer needs (convlab/threads.py, "One pool at a time")
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas():
        if len(jobs) == 1:
            _tap_gemms(xf, gf, off, length, chunk, cg, jobs[0], gw)
        else:
            list(_pool(len(jobs)).map(
                lambda job: _tap_gemms(xf, gf, off, length, chunk, cg, job, gw), jobs))
    return np.ascontiguousarray(gw.transpose(0, 2, 1)).reshape(spec.weight_shape)


def row_blocks(k_out: int, groups: int, threads: int) -> list[tuple[int, int, int]]:
    """(group, k0, k1): gw's output-channel rows cut into blocks, at least ``threads``
    of them when the channels allow, never across a group."""
    kg = k_out // groups
    per_group = max(1, min(kg, -(-threads // groups)))
    step = -(-kg // per_group)
    return [(grp, grp * kg + k0, grp * kg + min(kg, k0 + step))
            for grp in range(groups) for k0 in range(0, kg, step)]


# Positions per chunk: its lowered input (taps x C/groups rows) stays in the caches
# (Zen 4: 1 MiB L2 per core, 32 MiB L3) while the GEMM reads it.
CHUNK_BYTES = 2 * 1024 * 1024


def chunk_length(rows: int, itemsize: int) -> int:
    """Positions per chunk: rows * length * itemsize ~ CHUNK_BYTES, at least 256 (the
    GEMM's reduction must stay long enough for BLAS)."""
    return max(256, CHUNK_BYTES // (rows * itemsize))


def _tap_gemms(xf: np.ndarray, gf: np.ndarray, off: np.ndarray, length: int, chunk: int,
               cg: int, blocks: list[tuple[int, int, int]], gw: np.ndarray) -> None:
    """gw[k0:k1] += gf[k0:k1, chunk] @ cols^T for each chunk of positions and each of this
    worker's row blocks, where ``cols[r*cg + c] = xf[group's c, chunk + off[r]]``: the
    chunk's input, one shifted copy per tap, so one GEMM per chunk covers every tap (a
    (K/g) x (taps*C/g) result: wide enough for BLAS, where one tap's (K/g) x (C/g) is not).
    In a fixed order, into rows nobody else writes."""
    taps = off.shape[0]
    part = np.empty((max(k1 - k0 for _, k0, k1 in blocks), taps * cg), dtype=gw.dtype)
    cols = np.empty((taps * cg, chunk), dtype=gw.dtype)
    for m0 in range(0, length, chunk):
        m1 = min(length, m0 + chunk)
        built = -1
        for grp, k0, k1 in blocks:
            if grp != built:  # the chunk's lowered input for this group
                x_rows = xf[grp * cg:(grp + 1) * cg]
                for r in range(taps):
                    cols[r * cg:(r + 1) * cg, :m1 - m0] = x_rows[:, off[r] + m0:off[r] + m1]
                built = grp
            p = part[:k1 - k0]
            np.matmul(gf[k0:k1, m0:m1], cols[:, :m1 - m0].T, out=p)
            gw[k0:k1] += p.reshape(k1 - k0, taps, cg)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` Python threads, made once (matmul releases the GIL)."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers,
                                                        thread_name_prefix="polyphase")
        return pool
