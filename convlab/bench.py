"""The benchmark harness: is it right, how fast is it, and compared with what?

Every speed claim in convlab (README, notebooks, issue notes) comes from here.
For each (layer, kernel) the harness

1. **refuses honestly**: a kernel that cannot run the layer (``supports`` or
   ``available`` says why) gets an ``n/a`` record with its reason; a slow kernel
   (``python``, ``naive``) whose *estimated* time per call is over ``max_call_s``
   gets a ``skip`` record with the estimate.  Nothing is hidden from the table.
2. **checks before it times**: the kernel's output on the layer (at a smaller
   batch when the layer is big) is compared with the float64 oracle
   (:func:`convlab.reference.compare`, the kernel's own tolerance).  A wrong
   kernel gets a ``wrong`` record and is never timed.  That first call is timed
   on its own: it includes Numba's JIT compile (or its on-disk cache load) the
   first time a kernel runs in a process (``first_use``).
3. **times the steady state**: one warm-up call, then ``repeats`` samples of
   ``number`` back-to-back calls each (``number`` > 1 only for sub-millisecond
   calls), on arrays prepared once (:func:`convlab.functional.prepare`'s job is
   not timed).  The samples of a layer's kernels are taken round-robin, so load
   from elsewhere on the machine hits every kernel alike.  Median and
   quartiles/min/max are kept; GFLOP/s uses :meth:`ConvSpec.flops`
   (direct-convolution FLOPs for every algorithm).
4. **compares in the same run**: the machine's float GEMM peak and a parallel
   copy's memory bandwidth are measured first (:func:`calibrate`); PyTorch's
   ``conv2d`` (when installed, with as many threads as Numba) and ``naive`` run
   through the same gate and timer, so ratios come from one run, one machine.

Results are plain data: a :class:`BenchResult` holding the machine
(:func:`convlab.system.describe`), the calibration, the settings and a list of
:class:`Record`, saved as JSON (and CSV beside it).  Plots are drawn from the
saved records (:mod:`convlab.plots`), never by timing again.

On a GPU (``device="cuda"``, ``convlab bench --device cuda``), ``cuda_naive`` and
``cuda_tiled`` go through the same refusals and the same oracle gate (the gate
runs ``cuda_tiled`` with the tiles chosen for the full batch, so what is checked
is what is timed); then :func:`convlab.kernels.cuda.time_on_gpu` times them:
CUDA events around back-to-back launches on inputs already on the GPU, the
copies in (``h2d_s``) and out (``d2h_s``) timed apart, the first call (compile)
apart.  The rivals are PyTorch's cuDNN in float32 with TF32 off (``torch_fp32``:
``vs_cudnn`` ratios are against it) and with torch's defaults
(``torch_default``); without torch with CUDA they are ``n/a`` records with the
reason.  The CPU's GEMM peak says nothing about a GPU, so a GPU run measures no
ceiling.  Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` runs the kernels on the
simulator (~1.5 ms per output): the ``tiny`` suite fits it, bigger layers are
skipped with an estimate, and its times say nothing about a GPU.

Other devices plug in without touching this file: a kernel registered with
``device="cuda"`` that convlab does not time itself is timed by
``TIMERS["cuda"]`` (or its own ``timer=`` extra), and may stage device-resident
inputs with a ``bench_stage=`` extra so that transfers stay out of the
steady-state time (see :class:`Contender`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

from . import kernels
from .functional import prepare
from .kernels.registry import Kernel, KernelUnavailableError, UnsupportedSpecError
from .reference import compare, conv2d_reference
from .shapes import ConvSpec, IntOrPair, PaddingArg

DEFAULT_BATCH = 8
# The oracle runs at ~2-4 GFLOP/s: gate on the largest batch that stays under this.
GATE_FLOPS = 4e8
# Sub-millisecond calls are timed in groups so one sample is at least this long.
MIN_SAMPLE_S = 2e-3
# Rough speeds used only to decide what to skip (multiply-adds per second, one call).
SLOW_KERNEL_MACS_PER_S = {"python": 2e6, "naive": 3e8}
# The CUDA simulator runs one CUDA thread at a time: ~1.5 ms per output plus ~15 us per
# multiply-add (measured on a 2-core box; used only to skip hopeless layers).
SIM_S_PER_OUTPUT, SIM_S_PER_MAC = 1.5e-3, 1.5e-5
# CUDA-event samples per kernel when --repeats is not given (each sample is the mean of
# enough back-to-back launches to last ~1 ms); the simulator's launches take seconds.
GPU_REPEATS, SIM_REPEATS = 20, 3
# The order the ladder plot and the default kernel list use; missing names are skipped.
LADDER = ("python", "naive", "parallel", "im2col", "winograd_f2", "winograd_f4", "winograd_f6",
          "cuda_naive", "cuda_tiled")
RIVAL = "torch"
# The GPU rivals (names as convlab.kernels.cuda.time_on_gpu knows them): cuDNN in float32
# with TF32 off (the like-for-like one, CUDNN: the "x cudnn" ratios), and torch's defaults.
GPU_RIVALS = ("torch_fp32", "torch_default")
CUDNN = "torch_fp32"
# Set (to "1") by `convlab bench --cold-cache` in the child process it starts with an empty
# NUMBA_CACHE_DIR, so the records say their first calls include a real compile.
COLD_CACHE_ENV = "CONVLAB_COLD_CACHE"
STATUSES = ("ok", "wrong", "n/a", "skip", "error")


# --------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class Layer:
    """One named convolution layer, as ``torch.nn.Conv2d`` arguments plus an input size."""

    name: str
    in_channels: int
    size: tuple[int, int]  # input height, width
    out_channels: int
    kernel_size: IntOrPair
    stride: IntOrPair = 1
    padding: PaddingArg = 0
    dilation: IntOrPair = 1
    groups: int = 1
    batch: int | None = None  # None: the run's batch (DEFAULT_BATCH unless overridden)
    note: str = ""

    def spec(self, batch: int) -> ConvSpec:
        return ConvSpec.create((batch, self.in_channels) + tuple(self.size), self.out_channels,
                               self.kernel_size, self.stride, self.padding, self.dilation,
                               self.groups)  # fmt: skip

    def describe(self) -> str:
        """Short human label: '3x3 64->64 @56x56 s1 p1'."""
        s = self.spec(1)
        kh, kw = s.kernel_size
        txt = f"{kh}x{kw} {s.in_channels}->{s.out_channels} @{s.height}x{s.width}"
        if s.stride != (1, 1):
            txt += f" s{s.stride[0]}" if s.stride[0] == s.stride[1] else f" s{s.stride}"
        if s.dilation != (1, 1):
            txt += f" d{s.dilation[0]}" if s.dilation[0] == s.dilation[1] else f" d{s.dilation}"
        if s.groups != 1:
            txt += " depthwise" if s.groups == s.in_channels else f" g{s.groups}"
        return txt


def _res(name: str, c: int, hw: int, **kw: Any) -> Layer:
    return Layer(name, c, (hw, hw), c, 3, padding=1, **kw)


SEED = Layer("seed", 5, (10, 12), 2, 3, batch=64, note="the seed's example: N=64, 5->2, 3x3")
RESNET = (
    _res("res_64x56", 64, 56, note="ResNet conv2_x 3x3"),
    _res("res_128x28", 128, 28, note="ResNet conv3_x 3x3"),
    _res("res_256x14", 256, 14, note="ResNet conv4_x 3x3"),
    _res("res_512x7", 512, 7, note="ResNet conv5_x 3x3"),
    Layer("res_stem", 3, (224, 224), 64, 7, stride=2, padding=3, note="ResNet conv1 7x7/2"),
    Layer("res_down", 64, (56, 56), 128, 1, stride=2, note="ResNet-18 1x1/2 downsample"),
)
VGG = (
    Layer("vgg_conv1_1", 3, (224, 224), 64, 3, padding=1, note="VGG-16 conv1_1"),
    Layer("vgg_conv2_1", 64, (112, 112), 128, 3, padding=1, note="VGG-16 conv2_1"),
    Layer("vgg_conv3_2", 256, (56, 56), 256, 3, padding=1, note="VGG-16 conv3_2"),
    Layer("vgg_conv4_2", 512, (28, 28), 512, 3, padding=1, note="VGG-16 conv4_2"),
    Layer("vgg_conv5_2", 512, (14, 14), 512, 3, padding=1, note="VGG-16 conv5_2"),
)
MOBILENET = (
    Layer("mb_dw_32x112", 32, (112, 112), 32, 3, padding=1, groups=32,
          note="MobileNet-v1 depthwise 3x3"),
    Layer("mb_dw_64x112s2", 64, (112, 112), 64, 3, stride=2, padding=1, groups=64,
          note="MobileNet-v1 depthwise 3x3/2"),
    Layer("mb_pw_32to64x112", 32, (112, 112), 64, 1, note="MobileNet-v1 pointwise 1x1"),
    Layer("mb_pw_512x14", 512, (14, 14), 512, 1, note="MobileNet-v1 pointwise 1x1"),
)
DILATED = (
    Layer("dil2_64x56", 64, (56, 56), 64, 3, padding=2, dilation=2,
          note="dilated 3x3 (DeepLab-style), dilation 2"),
    Layer("dil2_256x14", 256, (14, 14), 256, 3, padding=2, dilation=2,
          note="dilated 3x3, dilation 2"),
)


def _unique(layers: Iterable[Layer]) -> tuple[Layer, ...]:
    seen: dict[str, Layer] = {}
    for layer in layers:
        seen.setdefault(layer.name, layer)
    return tuple(seen.values())


SUITES: dict[str, tuple[Layer, ...]] = {
    "seed": (SEED,),
    "resnet": RESNET,
    "vgg": VGG,
    "mobilenet": MOBILENET,
    "dilated": DILATED,
    # ~1 minute on 2 cores for the default kernels: one layer of each kind
    "quick": (SEED, RESNET[2], MOBILENET[0], MOBILENET[2], DILATED[1]),
    "all": _unique((SEED,) + RESNET + VGG + MOBILENET + DILATED),
}


# Toy layers for the CUDA simulator (a few hundred outputs: ~1 s per call there), each with
# a ragged edge for the tiles; stride, depthwise groups, dilation and asymmetric 'same'
# padding.  Kept out of SUITES and "all" (real networks' layers, which the figures plot).
TOY_SUITES: dict[str, tuple[Layer, ...]] = {
    "tiny": (
        Layer("tiny_3x3", 3, (6, 7), 4, 3, padding=1, batch=2, note="toy: 3x3, ragged tiles"),
        Layer("tiny_dw_s2", 4, (9, 7), 4, 3, stride=2, padding=1, groups=4, batch=2,
              note="toy: depthwise 3x3/2"),
        Layer("tiny_dil_same", 3, (5, 9), 5, (2, 3), padding="same", dilation=(1, 2), batch=1,
              note="toy: dilated 2x3, asymmetric 'same' padding"),
    ),
}


def suite_names() -> list[str]:
    """Every suite ``suite_layers`` (and ``convlab bench --suite``) knows."""
    return [*SUITES, *TOY_SUITES]


def suite_layers(suite: str, only: Sequence[str] | None = None) -> tuple[Layer, ...]:
    """The layers of ``suite`` (optionally only those named in ``only``)."""
    if suite not in SUITES and suite not in TOY_SUITES:
        raise ValueError(f"unknown suite {suite!r}; suites: {', '.join(suite_names())}")
    layers = SUITES[suite] if suite in SUITES else TOY_SUITES[suite]
    if only:
        toys = (la for toy in TOY_SUITES.values() for la in toy)
        by_name = {layer.name: layer for layer in (*SUITES["all"], *toys)}
        unknown = [n for n in only if n not in by_name]
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r}; layers: {', '.join(by_name)}")
        layers = tuple(by_name[n] for n in only)
    return layers


# --------------------------------------------------------------------------- timers
Timer = Callable[[Callable[[], Any], int], float]


def wall_timer(call: Callable[[], Any], number: int) -> float:
    """Seconds for ``number`` back-to-back calls, by the wall clock (CPU kernels are
    synchronous: when the call returns, the work is done)."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return time.perf_counter() - start


# device -> timer.  A GPU backend registers its own (events, synchronisation).
TIMERS: dict[str, Timer] = {"cpu": wall_timer}


# --------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    """Something the harness can gate and time: a registry kernel or the rival.

    Hooks a kernel may set as ``@register(..., timer=..., bench_stage=...,
    bench_macs_per_s=...)`` extras:

    * ``timer(call, number) -> seconds``: how to time it (default: ``TIMERS[device]``);
    * ``bench_stage(x, w, b, spec) -> call``: a zero-argument callable running the
      kernel on inputs staged once (e.g. copied to the GPU), so the steady-state
      time excludes transfers (default: ``lambda: run(x, w, b, spec)``);
    * ``bench_macs_per_s``: a rough speed, used only to skip hopeless layers.

    convlab's own CUDA kernels and the GPU rivals fill the last three fields instead
    (:func:`_cuda_contender`, :func:`_gpu_rival`): ``gate_run(x, w, b, gate_spec,
    spec)`` runs the gate the way the timed call at ``spec`` will run; ``device_time(x,
    w, b, spec, repeats, expected)`` times the whole thing itself (a
    :class:`~convlab.kernels.cuda.GpuTiming`, checked against ``expected`` when given);
    ``estimate(spec) -> (seconds, how)`` predicts one call, to skip hopeless layers.
    """

    name: str
    device: str
    description: str
    run: Callable[[np.ndarray, np.ndarray, np.ndarray | None, ConvSpec], np.ndarray]
    why_not: Callable[[ConvSpec], str | None]
    tolerance: Callable[[ConvSpec, Any], float]
    timer: Timer | None = None
    stage: Callable[..., Callable[[], Any]] | None = None
    macs_per_s: float | None = None
    close: Callable[[], None] = field(default=lambda: None)
    gate_run: Callable[..., np.ndarray] | None = None
    device_time: Callable[..., Any] | None = None
    estimate: Callable[[ConvSpec], tuple[float, str]] | None = None

    def call_for(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                 spec: ConvSpec) -> Callable[[], Any]:
        if self.stage is not None:
            return self.stage(x, w, b, spec)
        run = self.run
        return lambda: run(x, w, b, spec)

    def measure(self, call: Callable[[], Any], number: int) -> float:
        timer = self.timer or TIMERS.get(self.device, wall_timer)
        return timer(call, number)


def _kernel_contender(kern: Kernel, weight_cache: bool = False) -> Contender:
    """A registry kernel.  With ``weight_cache``, a kernel that registered
    ``prepare=fn`` (Winograd's filter transform) gets its weight prepared once per
    layer, as ``Conv2d`` does, instead of on every call as ``conv2d`` does."""

    def why_not(spec: ConvSpec) -> str | None:
        try:
            kern.check(spec)
        except (UnsupportedSpecError, KernelUnavailableError) as exc:
            return str(exc)
        return None

    rate = kern.extras.get("bench_macs_per_s", SLOW_KERNEL_MACS_PER_S.get(kern.name))
    run, stage = kern.run, kern.extras.get("bench_stage")
    prep = kern.extras.get("prepare") if weight_cache else None
    if prep is not None:
        def run(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                spec: ConvSpec) -> np.ndarray:
            return kern.run(x, w, b, spec, prepared=prep(w, spec))

        if stage is None:
            def stage(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                      spec: ConvSpec) -> Callable[[], Any]:
                prepared = prep(w, spec)  # once, outside the timed calls
                return lambda: kern.run(x, w, b, spec, prepared=prepared)
    return Contender(kern.name, kern.device, kern.description, run, why_not, kern.tolerance,
                     kern.extras.get("timer"), stage, rate)  # fmt: skip


def _cuda_contender(kern: Kernel) -> Contender:
    """``cuda_naive`` / ``cuda_tiled``: refused and gated like every kernel, timed by
    :func:`convlab.kernels.cuda.time_on_gpu` (events; transfers and compile apart)."""
    from .kernels import cuda as ck

    def gate_run(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, gspec: ConvSpec,
                 spec: ConvSpec) -> np.ndarray:
        if kern.name != "cuda_tiled":
            return kern.run(x, w, b, gspec)
        # cuda_tiled picks its tiles from the grid size, so from the batch: check the
        # tiles the full batch will be timed with, not those of the gate's smaller batch
        from numba import cuda

        cfg = ck.default_config(spec, x.dtype.itemsize)
        bd = None if b is None else cuda.to_device(b)
        return ck.tiled_device(cuda.to_device(x), cuda.to_device(w), bd, gspec,
                               config=cfg).copy_to_host()

    def device_time(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec,
                    repeats: int | None, expected: np.ndarray | None) -> Any:
        reps = repeats or (SIM_REPEATS if ck.is_simulator() else GPU_REPEATS)
        return ck.time_on_gpu(kern.name, x, w, b, spec, repeats=reps,
                              check=expected is not None, expected=expected)

    def estimate(spec: ConvSpec) -> tuple[float, str]:
        outputs = math.prod(spec.batched_output_shape)
        return (outputs * SIM_S_PER_OUTPUT + spec.macs() * SIM_S_PER_MAC,
                f"on the CUDA simulator: {outputs:,} outputs at ~{SIM_S_PER_OUTPUT * 1e3:g} ms "
                f"+ {spec.macs():,} multiply-adds at ~{SIM_S_PER_MAC * 1e6:g} us; "
                f"--suite tiny fits it")

    sim = ck.cuda_unavailable() is None and ck.is_simulator()
    return replace(_kernel_contender(kern), gate_run=gate_run, device_time=device_time,
                   estimate=estimate if sim else None)


def _gpu_rival(name: str) -> Contender:
    """PyTorch's conv2d on the GPU (cuDNN): ``torch_fp32`` in float32 with TF32 off, or
    ``torch_default`` with torch's defaults (cuDNN may use TF32 tensor cores)."""
    from .kernels import cuda as ck

    desc = ("cuDNN via torch conv2d, float32 with TF32 off" if name == CUDNN else
            "cuDNN via torch conv2d, torch's defaults (TF32 allowed)")
    why = ck.torch_cuda_unavailable()
    if why is None and ck.cuda_unavailable() is None and ck.is_simulator():
        why = ("the convlab kernels run on the CPU simulator here: a ratio to the GPU "
               "would mean nothing")
    if why is not None:
        if "no CUDA GPU" in why or "not installed" in why:
            why += " (the cuDNN rival needs a CUDA build of torch and an NVIDIA GPU)"
        return Contender(name, "cuda", desc, _no_run, lambda spec: why, lambda s, d: 0.0)
    import torch
    import torch.nn.functional as F

    def run(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
        xp, pad = _torch_args(x, spec)
        cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
        saved = cudnn.allow_tf32, matmul.allow_tf32
        try:
            if name == CUDNN:
                cudnn.allow_tf32 = matmul.allow_tf32 = False
            with torch.no_grad():
                out = F.conv2d(torch.from_numpy(xp).cuda(), torch.from_numpy(w).cuda(),
                               None if b is None else torch.from_numpy(b).cuda(),
                               spec.stride, pad, spec.dilation, spec.groups)
            return out.cpu().numpy()
        finally:
            cudnn.allow_tf32, matmul.allow_tf32 = saved

    def tolerance(spec: ConvSpec, dtype: Any) -> float:
        tol = _torch_tolerance(spec, dtype)
        if name != CUDNN and np.dtype(dtype) == np.float32:
            # TF32 keeps 10 mantissa bits: a gate against gross errors only
            tol *= 20
        return tol

    def device_time(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec,
                    repeats: int | None, expected: np.ndarray | None) -> Any:
        # not re-checked: the gate did, with a rival's tolerance (cuDNN may pick another
        # algorithm, e.g. Winograd, whose float32 error passes that but not ours)
        return ck.time_on_gpu(name, x, w, b, spec, repeats=repeats or GPU_REPEATS,
                              check=False)

    return Contender(name, "cuda", f"{desc} (torch {torch.__version__})", run,
                     lambda spec: None, tolerance, device_time=device_time)


def _torch_args(x: np.ndarray, spec: ConvSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """torch pads symmetrically only: an asymmetric padding is applied to ``x`` first
    (once, outside any timed call)."""
    top, bottom, left, right = spec.padding
    if top == bottom and left == right:
        return x, (top, left)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))), (0, 0)


def _torch_tolerance(spec: ConvSpec, dtype: Any) -> float:
    """Not our kernel: a gate against gross errors (layout, padding), with room for
    oneDNN's / cuDNN's own algorithm choices."""
    scale = max(1.0, math.sqrt(spec.reduction_length / 576))
    return (1e-4 * scale) * (1e-8 if np.dtype(dtype) == np.float64 else 1.0)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_contender() -> Contender:
    """``torch.nn.functional.conv2d`` on the CPU, with as many threads as Numba uses."""
    import numba

    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        why = f"torch is not installed ({exc}); pip install 'convlab[torch]'"
        return Contender(RIVAL, "cpu", "torch.nn.functional.conv2d", _no_run,
                         lambda spec: why, lambda spec, dtype: 0.0)

    before = torch.get_num_threads()
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)

    def stage(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
              spec: ConvSpec) -> Callable[[], Any]:
        xp, pad = _torch_args(x, spec)
        tx, tw = torch.from_numpy(xp), torch.from_numpy(w)  # zero-copy views
        tb = None if b is None else torch.from_numpy(b)
        stride, dilation, groups = spec.stride, spec.dilation, spec.groups

        def call() -> Any:
            with torch.no_grad():
                return F.conv2d(tx, tw, tb, stride, pad, dilation, groups)

        return call

    def run(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
        return stage(x, w, b, spec)().numpy()

    return Contender(RIVAL, "cpu",
                     f"torch.nn.functional.conv2d (torch {torch.__version__}, {threads} threads)",
                     run, lambda spec: None, _torch_tolerance, None, stage, None,
                     close=lambda: torch.set_num_threads(before))  # fmt: skip


def _no_run(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
    raise RuntimeError("not runnable here")


def known_kernels(device: str | None = None) -> list[str]:
    """Registered kernel names (for ``device`` if given) in ladder order, then the rest."""
    names = [n for n, k in kernels.KERNELS.items() if device is None or k.device == device]
    return sorted(names, key=lambda n: (LADDER.index(n) if n in LADDER else len(LADDER), n))


def resolve_kernels(names: Sequence[str] | None, device: str = "cpu",
                    rival: bool = True) -> list[str]:
    """Validate kernel names; the default is every kernel for ``device`` plus the rival."""
    if names is None:
        chosen = known_kernels(device)
        if rival and device == "cpu" and torch_available():
            chosen.append(RIVAL)
        if rival and device == "cuda":  # n/a records (with the reason) when torch can't
            chosen.extend(GPU_RIVALS)
        return chosen
    known = known_kernels() + [RIVAL, *GPU_RIVALS]
    chosen = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown kernel {name!r}; known kernels: {', '.join(known)}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def check_device(device: str, names: Sequence[str]) -> None:
    """ValueError (one line, saying how to get them) when ``device`` is 'cuda' and the
    numba CUDA kernels among ``names`` cannot run here (no GPU, no simulator)."""
    if device != "cuda" or not any(
            n in kernels.KERNELS and kernels.KERNELS[n].device == "cuda" for n in names):
        return
    from .kernels.cuda import cuda_unavailable

    why = cuda_unavailable()
    if why is not None:
        raise ValueError(f"CUDA kernels are unavailable here: {why} (tiny layers only: "
                         f"--suite tiny)" if "NUMBA_ENABLE_CUDASIM" in why else
                         f"CUDA kernels are unavailable here: {why}")


def no_calibration() -> dict[str, Any]:
    """The ceilings of a GPU run: none (the CPU's GEMM peak and copy bandwidth say
    nothing about a GPU)."""
    what = "not measured (a GPU run: the CPU's GEMM peak says nothing about the GPU)"
    return {"peak_gflops": None, "peak_what": what, "bandwidth_gbs": None,
            "bandwidth_what": what}


# --------------------------------------------------------------------------- calibration
@njit(parallel=True, cache=True)
def _parallel_copy(src, dst):
    for i in prange(src.size):
        dst[i] = src[i]


def measure_peak(dtype: Any = np.float32, n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """The machine's practical compute ceiling: an n x n x n GEMM (NumPy's BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm-up: thread pool start, page faults
    times = [wall_timer(lambda: a @ b, 1) for _ in range(repeats)]
    flops = 2.0 * n**3
    return {"what": f"{np.dtype(dtype).name} GEMM {n}x{n}x{n} (numpy matmul)",
            "gflops": flops / min(times) / 1e9,
            "gflops_median": flops / float(np.median(times)) / 1e9}


def measure_bandwidth(mib: int = 128, repeats: int = 5) -> dict[str, Any]:
    """The memory ceiling: a parallel copy of ``mib`` MiB (bytes read + bytes written)."""
    src = np.random.default_rng(0).standard_normal(mib * 2**20 // 8)
    dst = np.empty_like(src)
    _parallel_copy(src, dst)  # compile (or load from cache) and fault the pages in
    times = [wall_timer(lambda: _parallel_copy(src, dst), 1) for _ in range(repeats)]
    moved = 2.0 * src.nbytes
    return {"what": f"parallel copy of {mib} MiB (numba prange; read + write counted)",
            "gbs": moved / min(times) / 1e9, "gbs_median": moved / float(np.median(times)) / 1e9}


def calibrate(dtype: Any = np.float32) -> dict[str, Any]:
    """Measure the compute and memory ceilings (GFLOP/s, GB/s) now."""
    peak, bw = measure_peak(dtype), measure_bandwidth()
    return {"peak_gflops": peak["gflops"], "peak_what": peak["what"],
            "peak_gflops_median": peak["gflops_median"], "bandwidth_gbs": bw["gbs"],
            "bandwidth_what": bw["what"], "bandwidth_gbs_median": bw["gbs_median"]}


def _merge(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Ceilings measured before and after the run: keep the best of each (another
    process on the machine can only make a measurement slower, never faster)."""
    merged = dict(before)
    for key in ("peak_gflops", "bandwidth_gbs"):
        merged[key] = max(before[key], after[key])
        merged[key + "_runs"] = [before[key], after[key]]
    return merged


# --------------------------------------------------------------------------- records
@dataclass
class Record:
    """One (layer, kernel) outcome.  ``status`` is one of STATUSES; times in seconds;
    ``vs_torch`` / ``vs_naive`` are speed ratios (their time / this time: > 1 is faster)."""

    layer: str
    layer_desc: str
    kernel: str
    device: str
    dtype: str
    batch: int
    status: str
    reason: str = ""
    flops: int = 0
    bytes: int = 0
    intensity: float = 0.0
    gate_batch: int | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    tolerance: float | None = None
    first_use: bool = False
    first_call_s: float | None = None
    compile_s: float | None = None
    number: int | None = None
    repeats: int | None = None
    median_s: float | None = None
    q1_s: float | None = None
    q3_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None
    peak_fraction: float | None = None
    bandwidth_gbs: float | None = None
    vs_torch: float | None = None
    vs_naive: float | None = None  # on a GPU: vs cuda_naive
    # GPU runs: the copies in (x, weight, bias) and out, timed apart from median_s
    # (CUDA events around the launches alone); vs_cudnn vs torch_fp32 (TF32 off)
    h2d_s: float | None = None
    d2h_s: float | None = None
    vs_cudnn: float | None = None
    note: str = ""  # e.g. cuda_tiled's tile config, the rival's TF32 setting

    def gflops_at(self, seconds: float | None) -> float | None:
        return None if not seconds else self.flops / seconds / 1e9


RECORD_FIELDS = [f.name for f in fields(Record)]


@dataclass
class BenchResult:
    """Everything one run measured: plain data, saved and loaded as JSON."""

    machine: dict[str, Any]
    calibration: dict[str, Any]
    settings: dict[str, Any]
    records: list[Record]

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "calibration": self.calibration,
                "settings": self.settings, "records": [asdict(r) for r in self.records]}

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write JSON and CSV (same name, the other suffix); returns both paths."""
        path = Path(path)
        json_path = path if path.suffix != ".csv" else path.with_suffix(".json")
        csv_path = path.with_suffix(".csv")
        json_path.write_text(json.dumps(self.to_dict(), indent=1, default=_jsonable) + "\n")
        with open(csv_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RECORD_FIELDS)
            writer.writeheader()
            for rec in self.records:
                writer.writerow({k: ("" if v is None else v) for k, v in asdict(rec).items()})
        return json_path, csv_path

    def layers(self) -> list[str]:
        return list(dict.fromkeys(r.layer for r in self.records))

    def kernels(self) -> list[str]:
        return list(dict.fromkeys(r.kernel for r in self.records))

    def get(self, layer: str, kernel: str) -> Record | None:
        for r in self.records:
            if r.layer == layer and r.kernel == kernel:
                return r
        return None

    def machine_line(self) -> str:
        m, s = self.machine, self.settings
        torch_v = m.get("versions", {}).get("torch")
        gpu = f"; {m.get('cuda', '?')}" if s.get("device") == "cuda" else ""
        return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, numba "
                f"{m.get('versions', {}).get('numba', '?')} ({m.get('numba_threads', '?')} "
                f"threads)" + (f", torch {torch_v}" if torch_v else "") + gpu
                + f"; {s.get('dtype', '?')}, {s.get('date', '')[:10]}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def load(path: str | os.PathLike) -> BenchResult:
    """Read a result saved by :meth:`BenchResult.save` (the JSON file)."""
    data = json.loads(Path(path).read_text())
    known = set(RECORD_FIELDS)
    records = [Record(**{k: v for k, v in r.items() if k in known}) for r in data["records"]]
    return BenchResult(data["machine"], data["calibration"], data["settings"], records)


# --------------------------------------------------------------------------- the run
def _inputs(layer: Layer, spec: ConvSpec, dtype: Any,
            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, ConvSpec]:
    """Random normal inputs (never zeros or ones: they hide wrong indexing), passed
    through :func:`convlab.functional.prepare` once, exactly as ``conv2d`` hands them to
    a kernel; that validation is not part of any timing."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.batch, spec.in_channels, spec.height, spec.width))
    w = rng.standard_normal(spec.weight_shape)
    b = rng.standard_normal(spec.bias_shape)
    xa, wa, ba, pspec = prepare(x.astype(dtype), w.astype(dtype), b.astype(dtype),
                                layer.stride, layer.padding, layer.dilation, layer.groups)
    assert ba is not None
    return xa, wa, ba, pspec


def gate_batch(spec: ConvSpec) -> int:
    """The largest batch <= spec.batch whose oracle stays under GATE_FLOPS (at least 1)."""
    per_item = spec.with_batch(1).flops()
    return max(1, min(spec.batch, int(GATE_FLOPS // max(per_item, 1))))


def _repeats_for(t_est: float, budget_s: float) -> tuple[int, int]:
    """(number, repeats) so one layer/kernel costs about ``budget_s``."""
    number = 1 if t_est >= MIN_SAMPLE_S else min(1000, math.ceil(MIN_SAMPLE_S / max(t_est, 1e-7)))
    sample = t_est * number
    if sample > budget_s / 3:
        return number, 3
    return number, int(min(50, max(5, budget_s // sample)))


@dataclass
class _Plan:
    """A gated (layer, kernel) waiting for its timing samples."""

    rec: Record
    who: Contender
    call: Callable[[], Any]
    number: int
    reps: int
    samples: list[float] = field(default_factory=list)


def _gate(rec: Record, who: Contender, spec: ConvSpec, x: np.ndarray, w: np.ndarray,
          b: np.ndarray, ref_cache: dict[int, np.ndarray], first_use: bool,
          repeats: int | None, budget_s: float) -> _Plan | None:
    """Check against the oracle (timing that first call), warm up, plan the samples.
    Fills ``rec``; returns None when the kernel is wrong (it is then never timed)."""
    if not _check(rec, who, spec, x, w, b, ref_cache, first_use):
        return None
    call = who.call_for(x, w, b, spec)
    # The gate's call, scaled to the full batch, predicts a warm call unless it included
    # a compile.  A call slower than the whole budget needs no warm-up (nothing to warm
    # that the first sample would not); a faster one gets one, which also measures it.
    t_est = rec.first_call_s * spec.batch / rec.gate_batch
    if first_use or t_est < budget_s:
        t_est = who.measure(call, 1)
    number, reps = _repeats_for(t_est, budget_s)
    return _Plan(rec, who, call, number, reps if repeats is None else repeats)


def _check(rec: Record, who: Contender, spec: ConvSpec, x: np.ndarray, w: np.ndarray,
           b: np.ndarray, ref_cache: dict[int, np.ndarray], first_use: bool) -> bool:
    """The correctness gate: run at :func:`gate_batch` (timing this first call), compare
    with the oracle, and check the inputs were left alone.  Fills ``rec``."""
    gb = gate_batch(spec)
    gspec = spec.with_batch(gb)
    xg = x[:gb]
    if gb not in ref_cache:
        ref_cache[gb] = conv2d_reference(xg, w, b, gspec)
    copies = (xg.copy(), w.copy(), b.copy())
    rec.gate_batch, rec.first_use = gb, first_use
    start = time.perf_counter()
    out = who.gate_run(xg, w, b, gspec, spec) if who.gate_run else who.run(xg, w, b, gspec)
    rec.first_call_s = time.perf_counter() - start
    tol = who.tolerance(gspec, x.dtype)
    report = compare(out, ref_cache[gb], tol)
    rec.max_abs_err, rec.max_rel_err, rec.tolerance = report.max_abs, report.max_rel, tol
    if not all(np.array_equal(a, c) for a, c in zip((xg, w, b), copies, strict=True)):
        rec.status, rec.reason = "wrong", "modified its input arrays"
        return False
    if not report.ok:
        rec.status, rec.reason = "wrong", f"failed the oracle check: {report}"
        return False
    return True


def _time_on_device(rec: Record, who: Contender, spec: ConvSpec, x: np.ndarray,
                    w: np.ndarray, b: np.ndarray, ref_cache: dict[int, np.ndarray],
                    repeats: int | None) -> None:
    """A gated contender that times itself (on the GPU: CUDA events, copies apart)."""
    assert who.device_time is not None and rec.gate_batch and rec.first_call_s is not None
    # the timed output is checked too when the gate's oracle covers the full batch
    expected = ref_cache.get(spec.batch)
    try:
        t = who.device_time(x, w, b, spec, repeats, expected)
    except ValueError as exc:
        if "wrong result" not in str(exc):  # time_on_gpu's words for a failed check
            raise
        rec.status, rec.reason = "wrong", f"the timed run failed the oracle check: {exc}"
        return
    rec.number, rec.repeats, rec.note = t.launches_per_sample, t.repeats, t.note
    rec.median_s, rec.min_s, rec.max_s = (t.kernel_ms * 1e-3, t.kernel_ms_min * 1e-3,
                                          t.kernel_ms_max * 1e-3)
    rec.h2d_s, rec.d2h_s = t.h2d_ms * 1e-3, t.d2h_ms * 1e-3
    rec.gflops = rec.gflops_at(rec.median_s)
    # the gate's call went NumPy -> GPU -> NumPy: what remains after a warm call's
    # copies and kernel (scaled to the gate's batch) is the JIT compile / module load
    warm = (rec.h2d_s + rec.median_s + rec.d2h_s) * rec.gate_batch / rec.batch
    rec.compile_s = max(0.0, rec.first_call_s - warm)
    rec.status = "ok"


def _sample(plans: list[_Plan]) -> None:
    """Take every plan's samples round-robin: each kernel's r-th sample before any
    kernel's (r+1)-th, so a burst of load from elsewhere on the machine hits them all
    alike and the ratios between kernels stay fair."""
    for r in range(max((p.reps for p in plans), default=0)):
        for p in plans:
            if r < p.reps and p.rec.status != "error":
                try:
                    p.samples.append(p.who.measure(p.call, p.number) / p.number)
                except Exception as exc:  # a crashing kernel is a result, not a crash
                    p.rec.status, p.rec.reason = "error", f"{type(exc).__name__}: {exc}"


def _summarise(p: _Plan) -> None:
    rec = p.rec
    if rec.status == "error":
        return
    samples = np.array(p.samples)
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    rec.number, rec.repeats = p.number, p.reps
    rec.median_s, rec.q1_s, rec.q3_s = float(med), float(q1), float(q3)
    rec.min_s, rec.max_s = float(samples.min()), float(samples.max())
    rec.gflops = rec.gflops_at(rec.median_s)
    # first call minus what a warm call of the gate's size costs: the JIT / cache load
    rec.compile_s = max(0.0, rec.first_call_s - rec.median_s * rec.gate_batch / rec.batch)
    rec.status = "ok"


def run_benchmark(
    suite: str = "quick",
    kernel_names: Sequence[str] | None = None,
    *,
    layers: Sequence[Layer] | None = None,
    only_layers: Sequence[str] | None = None,
    batch: int | None = None,
    dtype: str = "float32",
    repeats: int | None = None,
    max_call_s: float = 2.0,
    budget_s: float = 0.5,
    device: str = "cpu",
    rival: bool = True,
    progress: bool = True,
    seed: int = 0,
    calibration: dict[str, Any] | None = None,
    weight_cache: bool = False,
) -> BenchResult:
    """Gate and time every (layer, kernel) pair; see the module docstring.

    ``layers`` (explicit :class:`Layer` objects) overrides ``suite``.  ``batch``
    overrides every layer's batch.  ``repeats`` fixes the number of samples
    (default: adaptive, about ``budget_s`` seconds per pair).  Slow kernels whose
    estimated time per call exceeds ``max_call_s`` are skipped (and recorded).
    ``calibration`` skips measuring the peak and bandwidth (tests, re-runs).
    ``weight_cache`` lets kernels that registered ``prepare=`` transform the weight once
    per layer (as ``Conv2d`` does); by default every call starts from the raw weight,
    as ``torch.nn.functional.conv2d`` does.  ``device="cuda"``: see the module
    docstring (ValueError, saying how to get them, when the CUDA kernels can't run here;
    ``repeats`` is then the number of CUDA-event samples, default ``GPU_REPEATS``).
    """
    from tqdm.auto import tqdm

    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if batch is not None and (isinstance(batch, bool) or int(batch) < 1):
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if repeats is not None and int(repeats) < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    chosen_layers = tuple(layers) if layers is not None else suite_layers(suite, only_layers)
    names = resolve_kernels(kernel_names, device, rival)
    check_device(device, names)
    np_dtype = np.dtype(dtype)
    started = time.perf_counter()
    measure_ceilings = calibration is None and device == "cpu"
    if calibration is None and device != "cpu":
        calibration = no_calibration()

    # disable=None: a bar on a terminal, none in a log file or CI
    bar = tqdm(total=len(chosen_layers) * len(names) + 2 * measure_ceilings,
               disable=None if progress else True, unit="run", dynamic_ncols=True, leave=False)
    bar.set_description("calibrating (GEMM peak, bandwidth)")
    calib = calibrate(np_dtype) if measure_ceilings else dict(calibration or {})
    bar.update(measure_ceilings)
    from .kernels.cuda import DEVICE_ENTRIES

    contenders: dict[str, Contender] = {}
    for name in names:
        if name == RIVAL:
            contenders[name] = _torch_contender()
        elif name in GPU_RIVALS:
            contenders[name] = _gpu_rival(name)
        elif name in DEVICE_ENTRIES:
            contenders[name] = _cuda_contender(kernels.KERNELS[name])
        else:
            contenders[name] = _kernel_contender(kernels.KERNELS[name], weight_cache)
    used: set[str] = set()
    records: list[Record] = []
    try:
        for index, layer in enumerate(chosen_layers):
            spec = layer.spec(batch or layer.batch or DEFAULT_BATCH)
            x, w, b, spec = _inputs(layer, spec, np_dtype, seed + index)
            ref_cache: dict[int, np.ndarray] = {}
            plans: list[_Plan] = []
            for name, who in contenders.items():
                bar.set_description(f"{layer.name}: checking {name}")
                rec = Record(layer.name, layer.describe(), name, who.device, dtype, spec.batch,
                             "n/a", flops=spec.flops(), bytes=spec.bytes_moved(np_dtype.itemsize),
                             intensity=spec.arithmetic_intensity(np_dtype.itemsize))
                records.append(rec)
                why = who.why_not(spec)
                if who.estimate is not None:
                    estimate, how = who.estimate(spec)
                elif who.macs_per_s:
                    estimate = spec.macs() / who.macs_per_s
                    how = f"{spec.macs():.3g} multiply-adds at ~{who.macs_per_s:.0e}/s"
                else:
                    estimate, how = 0.0, ""
                if why is not None:
                    rec.status, rec.reason = "n/a", why
                elif estimate > max_call_s:
                    rec.status = "skip"
                    rec.reason = (f"too slow here: ~{estimate:.3g} s per call estimated "
                                  f"({how}) > max_call_s={max_call_s:g}")
                else:
                    plan = None
                    try:
                        if who.device_time is None:
                            plan = _gate(rec, who, spec, x, w, b, ref_cache, name not in used,
                                         repeats, budget_s)
                        elif _check(rec, who, spec, x, w, b, ref_cache, name not in used):
                            bar.set_description(f"{layer.name}: timing {name} (CUDA events)")
                            _time_on_device(rec, who, spec, x, w, b, ref_cache, repeats)
                    except Exception as exc:  # a crashing kernel is a result, not a crash
                        rec.status, rec.reason = "error", f"{type(exc).__name__}: {exc}"
                        plan = None
                    used.add(name)
                    if plan is not None:
                        plans.append(plan)
                bar.update(1)
            bar.set_description(f"{layer.name}: timing {len(plans)} kernels, interleaved")
            _sample(plans)
            for plan in plans:
                _summarise(plan)
        if measure_ceilings:
            bar.set_description("calibrating again")
            calib = _merge(calib, calibrate(np_dtype))
            bar.update(1)
    finally:
        bar.close()
        for who in contenders.values():
            who.close()
    _relate(records, calib)
    import numba

    settings = {
        "suite": suite if layers is None and not only_layers else "custom",
        "layers": [la.name for la in chosen_layers],
        "layer_args": {la.name: asdict(la) for la in chosen_layers},
        "kernels": names, "batch": batch, "dtype": dtype, "repeats": repeats,
        "max_call_s": max_call_s, "budget_s": budget_s, "device": device,
        "weight_cache": weight_cache,
        "threads": numba.get_num_threads(), "seed": seed,
        "numba_cache": ("cold: a fresh NUMBA_CACHE_DIR, first calls compile"
                        if os.environ.get(COLD_CACHE_ENV) == "1" else
                        "as found: a first call may load compiled code from disk"),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    return BenchResult(_machine(), calib, settings, records)


@functools.lru_cache(maxsize=1)
def _machine_cached() -> str:
    from .system import describe

    return json.dumps(describe(), default=str)


def _machine() -> dict[str, Any]:
    """The machine description (computed once per process: it runs a parallel function)."""
    return json.loads(_machine_cached())


def _relate(records: list[Record], calib: dict[str, Any]) -> None:
    """Fill the ceilings, peak fraction and the ratios vs torch, cuDNN (TF32 off) and
    naive (cuda_naive for GPU records): same layer, same run."""
    base = {(r.layer, r.kernel): r.median_s for r in records if r.status == "ok"}
    for r in records:
        r.peak_gflops, r.bandwidth_gbs = calib.get("peak_gflops"), calib.get("bandwidth_gbs")
        if r.status != "ok" or not r.median_s:
            continue
        if r.gflops and r.peak_gflops:
            r.peak_fraction = r.gflops / r.peak_gflops
        naive = "cuda_naive" if r.device == "cuda" else "naive"
        for other, attr in ((RIVAL, "vs_torch"), (CUDNN, "vs_cudnn"), (naive, "vs_naive")):
            t = base.get((r.layer, other))
            if t:
                setattr(r, attr, t / r.median_s)


def run_in_fresh_process(argv: Sequence[str], cold_cache: bool = True) -> int:
    """Run ``convlab bench ARGV`` in a new Python process; with ``cold_cache`` its Numba
    cache is a new empty folder, so each kernel's first call is a real JIT compile.
    Returns the exit status."""
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="convlab-numba-cache-") as tmp:
        if cold_cache:
            env["NUMBA_CACHE_DIR"], env[COLD_CACHE_ENV] = tmp, "1"
        code = ("import sys; from convlab.cli import main; "
                "sys.exit(main(['bench', *sys.argv[1:]]))")
        return subprocess.run([sys.executable, "-c", code, *argv], env=env).returncode


# --------------------------------------------------------------------------- the table
def format_time(s: float | None, *, missing: str = "-", micro: str = "us") -> str:
    """Seconds for people: '1.23 s', '4.5 ms', '67 us' (the table and the plots)."""
    if s is None:
        return missing
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} {micro}"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _on_gpu(result: BenchResult) -> bool:
    return (result.settings.get("device") == "cuda"
            or any(r.device == "cuda" for r in result.records))


def _header(result: BenchResult) -> list[str]:
    c, st = result.calibration, result.settings
    run = (f"run:     {st.get('elapsed_s', '?')} s, batch {st.get('batch') or 'per layer'}, "
           f"repeats {st.get('repeats') or 'adaptive'}; numba cache "
           f"{st.get('numba_cache', '?')}")
    if _on_gpu(result):
        gpu = str(result.machine.get("cuda", "?"))
        sim = gpu.startswith("simulator")
        return [f"machine: {result.machine_line()}",
                *(["SIMULATOR: the kernels ran on the CPU, one CUDA thread at a time; these "
                   "times say nothing about a GPU"] if sim else []),
                run.replace("adaptive", f"{SIM_REPEATS} (the simulator's default)" if sim
                            else f"{GPU_REPEATS} event samples"),
                "times:   kernel = CUDA events around back-to-back launches on inputs already "
                f"on the GPU (median{'; the wall clock on the simulator' if sim else ''}); "
                "copy in = x, weight, bias to the GPU; copy out = the "
                "output back; first call = the gate's call from NumPy (copies + kernel + "
                "compile on first use)",
                "ratios:  x cudnn = torch_fp32's kernel time (cuDNN float32, TF32 off) / this "
                "one; x naive = cuda_naive's / this one (> 1: faster); spread = half the "
                "min-max range of the samples",
                f"GFLOP/s: direct-convolution FLOPs / kernel time; ceilings "
                f"{c.get('peak_what', '?')}", ""]
    return [f"machine: {result.machine_line()}",
            f"peak:    {c['peak_gflops']:.1f} GFLOP/s ({c['peak_what']}); memory "
            f"{c['bandwidth_gbs']:.1f} GB/s ({c['bandwidth_what']})", run,
            "weights: " + ("prepared once per layer (weight_cache: Winograd's filter "
                           "transform not timed)" if st.get("weight_cache") else
                           "raw on every call, as torch.nn.functional.conv2d takes them"),
            *([] if result.machine.get("versions", {}).get("torch") else
              ["torch:   not installed, so no PyTorch comparison (pip install "
               "'convlab[torch]')"]),
            "ratios:  x torch / x naive = their time / this time (> 1: faster); spread = "
            "interquartile range of the samples",
            "GFLOP/s: direct-convolution FLOPs for every kernel (Winograd does fewer "
            "multiplies, so it can pass 100% of the GEMM peak)", ""]  # fmt: skip


def _row(r: Record, gpu: bool) -> str:
    if r.status != "ok":
        label = {"wrong": "WRONG", "error": "ERROR"}.get(r.status, r.status)
        return f"  {r.kernel:<{14 if gpu else 13}}{label}: {r.reason}"
    med = r.median_s or 0.0
    if r.q1_s is not None and r.q3_s is not None:
        spread = (r.q3_s - r.q1_s) / med * 50 if med else 0.0
    else:  # GPU timings keep min and max, not quartiles
        spread = ((r.max_s or med) - (r.min_s or med)) / med * 50 if med else 0.0
    spread_txt = "±" + format(spread, ".0f") + "%"
    if gpu:
        return (f"  {r.kernel:<14}{format_time(r.first_call_s):>11}{format_time(r.h2d_s):>10}"
                f"{format_time(r.median_s):>10}{format_time(r.d2h_s):>10}{spread_txt:>8}"
                f"{_fmt(r.gflops, '.3g'):>9}{_fmt(r.vs_cudnn, '.3g'):>9}"
                f"{_fmt(r.vs_naive, '.3g'):>9}{_fmt(r.max_rel_err, '.1e'):>9}"
                + (f"  {r.note}" if r.note else ""))
    pct = None if r.peak_fraction is None else 100 * r.peak_fraction
    return (f"  {r.kernel:<13}{format_time(r.first_call_s):>11}{format_time(r.median_s):>11}"
            f"{spread_txt:>8}{_fmt(r.gflops, '.3g'):>9}"
            f"{_fmt(pct, '.1f'):>8}{_fmt(r.vs_torch, '.3g'):>9}"
            f"{_fmt(r.vs_naive, '.3g'):>9}{_fmt(r.max_rel_err, '.1e'):>9}")


def format_table(result: BenchResult) -> str:
    """The human-readable report: one block per layer, one line per kernel, then a
    GFLOP/s summary (layers x kernels) and geometric means vs torch (on a GPU: vs
    cuDNN in float32, TF32 off)."""
    gpu = _on_gpu(result)
    lines = _header(result)
    if gpu:
        head = (f"  {'kernel':<14}{'first call':>11}{'copy in':>10}{'kernel':>10}"
                f"{'copy out':>10}{'spread':>8}{'GFLOP/s':>9}{'x cudnn':>9}{'x naive':>9}"
                f"{'rel err':>9}")
    else:
        head = (f"  {'kernel':<13}{'first call':>11}{'median':>11}{'spread':>8}{'GFLOP/s':>9}"
                f"{'% peak':>8}{'x torch':>9}{'x naive':>9}{'rel err':>9}")
    by_layer: dict[str, list[Record]] = {}
    for r in result.records:
        by_layer.setdefault(r.layer, []).append(r)
    for layer, recs in by_layer.items():
        r0 = recs[0]
        lines.append(f"{layer}: {r0.layer_desc}, batch {r0.batch}, {r0.flops / 1e9:.3g} GFLOP, "
                     f"{r0.intensity:.1f} FLOP/byte")
        lines.append(head)
        lines.extend(_row(r, gpu) for r in recs)
        lines.append("")
    lines.append("GFLOP/s (median; n/a = refused, skip = too slow, WRONG = failed the oracle)")
    names = result.kernels()
    col = max([12] + [len(n) + 1 for n in names])
    width = max([len(n) for n in result.layers()] + [5]) + 2
    lines.append(" " * width + "".join(f"{n:>{col}}" for n in names))
    for layer, recs in by_layer.items():
        cells = []
        for n in names:
            r = next((x for x in recs if x.kernel == n), None)
            if r is None:
                cells.append("")
            elif r.status == "ok":
                cells.append(format(r.gflops, ".3g"))
            else:
                cells.append({"wrong": "WRONG", "error": "ERROR"}.get(r.status, r.status))
        lines.append(f"{layer:<{width}}" + "".join(f"{cell:>{col}}" for cell in cells))
    base, attr, what = (CUDNN, "vs_cudnn", "cuDNN (float32, TF32 off)") if gpu else (
        RIVAL, "vs_torch", "torch")
    means = []
    for n in names:
        ratios = [getattr(r, attr) for r in result.records
                  if r.kernel == n and getattr(r, attr) is not None and n != base]
        if ratios:
            gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
            means.append(f"{n} {gm:.3g}x ({len(ratios)} layers)")
    if means:
        lines.append("")
        lines.append(f"geometric mean speed vs {what}: " + ", ".join(means))
    return "\n".join(lines)
