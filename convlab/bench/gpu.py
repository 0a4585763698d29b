"""The GPU side of the harness: CUDA-event timing, the cuDNN rivals, the simulator's limits.

``convlab bench --device cuda`` runs the registry's ``device="cuda"`` kernels through
the same gate and round-robin samples as the CPU kernels; only three things differ,
and they are here:

* **timing**: a GPU launch returns before the work is done, so the wall clock would
  time the launch.  :func:`cuda_timer` records CUDA events in the stream around
  back-to-back launches and synchronises on the last one; the inputs are already on
  the GPU (the kernel's ``place`` hook), so copies are timed apart (``h2d_s``/``d2h_s``).
* **the rivals**: PyTorch's cuDNN in float32 with TF32 off (``torch_fp32``: the
  like-for-like rival, ``x cudnn`` ratios are against it) and with torch's defaults
  (``torch_default``: cuDNN may use TF32 tensor cores, 10-bit mantissas).  TF32 is a
  process-wide torch setting: :func:`tf32` sets it around each call and restores it.
* **the simulator** (``NUMBA_ENABLE_CUDASIM=1``, no GPU): kernels run on the CPU, one
  CUDA thread at a time (~1.5 ms per output), so the wall clock times them, big
  layers are skipped with an estimate (:func:`simulator_estimate`), and the numbers
  say nothing about a GPU.  The CPU's GEMM peak says nothing about a GPU either: a
  GPU run measures no ceiling (:func:`convlab.bench.ceilings.no_calibration`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import kernels
from ..errors import UsageError
from ..kernels.registry import Placed
from ..shapes import ConvSpec
from .contenders import Contender, rival_tolerance, torch_args, unavailable
from .timing import Timer, wall_timer

# The GPU rivals: cuDNN in float32 with TF32 off (CUDNN: the "x cudnn" ratios), and
# torch's defaults (TF32 allowed).
GPU_RIVALS = ("torch_fp32", "torch_default")
CUDNN = "torch_fp32"
# TF32 keeps 10 mantissa bits: torch_default's gate is this much looser (gross errors only).
TF32_TOLERANCE_FACTOR = 20
# The CUDA simulator runs one CUDA thread at a time: ~1.5 ms per output plus ~15 us per
# multiply-add (measured on a 2-core box; used only to skip hopeless layers).
SIM_S_PER_OUTPUT, SIM_S_PER_MAC = 1.5e-3, 1.5e-5


def _cuda_status() -> Any:
    from ..kernels import cuda as ck

    return ck


def on_simulator() -> bool:
    ck = _cuda_status()
    return ck.cuda_unavailable() is None and ck.is_simulator()


def event_timer(make_event: Callable[[], Any]) -> Timer:
    """A timer from CUDA events (numba's or torch's: both ``record()``,
    ``synchronize()`` and ``elapsed_time(later)`` in ms): one event before ``number``
    back-to-back launches, one after, wait for the last, read the time between."""

    def timer(call: Callable[[], Any], number: int) -> float:
        start, stop = make_event(), make_event()
        start.record()
        for _ in range(number):
            call()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) * 1e-3

    return timer


def cuda_timer() -> Timer:
    """numba's CUDA events (the wall clock on the simulator, which runs synchronously
    and whose events time nothing)."""
    if _cuda_status().cuda_unavailable() is not None or on_simulator():
        return wall_timer
    from numba import cuda

    # numba.cuda star-imports the simulator's API or the device's, chosen at run time; a
    # type checker reads the simulator's, whose Event() takes no `timing`
    return event_timer(lambda: cuda.event(timing=True))  # type: ignore[call-arg]


def simulator_estimate() -> Callable[[ConvSpec], tuple[float, str]] | None:
    """On the simulator, a (seconds, how) estimate per layer, so hopeless layers are
    skipped; None on a GPU (everything is worth running there)."""
    if not on_simulator():
        return None

    def estimate(spec: ConvSpec) -> tuple[float, str]:
        outputs = math.prod(spec.batched_output_shape)
        return (outputs * SIM_S_PER_OUTPUT + spec.macs() * SIM_S_PER_MAC,
                f"on the CUDA simulator: {outputs:,} outputs at ~{SIM_S_PER_OUTPUT * 1e3:g} ms "
                f"+ {spec.macs():,} multiply-adds at ~{SIM_S_PER_MAC * 1e6:g} us; "
                f"--suite tiny fits it")

    return estimate


def torch_cuda_unavailable() -> str | None:
    """None when torch with a CUDA GPU is importable here, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


@contextlib.contextmanager
def tf32(allowed: bool | None) -> Iterator[None]:
    """torch's TF32 switches (cuDNN and matmul) set to ``allowed`` for the block and
    restored after it; ``None`` leaves torch's own setting alone."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    try:
        if allowed is not None:
            cudnn.allow_tf32 = matmul.allow_tf32 = allowed
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def torch_gpu_contender(name: str) -> Contender:
    """``torch_fp32`` (cuDNN, float32, TF32 off) or ``torch_default`` (torch's defaults)."""
    desc = ("cuDNN via torch conv2d, float32 with TF32 off" if name == CUDNN else
            "cuDNN via torch conv2d, torch's defaults (TF32 allowed)")
    why = torch_cuda_unavailable()
    if why is None and on_simulator():
        why = ("the convlab kernels run on the CPU simulator here: a ratio to the GPU "
               "would mean nothing")
    if why is not None:
        if "no CUDA GPU" in why or "not installed" in why:
            why += " (the cuDNN rival needs a CUDA build of torch and an NVIDIA GPU)"
        return unavailable(name, "cuda", desc, why)
    import torch
    import torch.nn.functional as F

    allow = False if name == CUDNN else None

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> Placed:
        xp, pad = torch_args(x, spec)
        start = time.perf_counter()
        xt, wt = torch.from_numpy(xp).cuda(), torch.from_numpy(w).cuda()
        bt = None if b is None else torch.from_numpy(b).cuda()
        torch.cuda.synchronize()
        copy_in = time.perf_counter() - start

        def call() -> Any:
            with tf32(allow), torch.no_grad():
                return F.conv2d(xt, wt, bt, spec.stride, pad, spec.dilation, spec.groups)

        note = ("cuDNN float32, TF32 off" if name == CUDNN else
                f"torch defaults (cudnn.allow_tf32={torch.backends.cudnn.allow_tf32})")
        return Placed(call, lambda out: out.cpu().numpy(), copy_in, note)

    def tolerance(spec: ConvSpec, dtype: Any) -> float:
        tol = rival_tolerance(spec, dtype)
        if name != CUDNN and np.dtype(dtype) == np.float32:
            tol *= TF32_TOLERANCE_FACTOR
        return tol

    return Contender(name, "cuda", f"{desc} (torch {torch.__version__})", lambda spec: None,
                     tolerance, setup,
                     event_timer(lambda: torch.cuda.Event(enable_timing=True)))


def check_device(device: str, names: Sequence[Any]) -> None:
    """ValueError (one line, saying how to get them) when ``device`` is 'cuda' and the
    numba CUDA kernels among ``names`` cannot run here (no GPU, no simulator)."""
    if device != "cuda" or not any(isinstance(n, str) and n in kernels.KERNELS
                                   and kernels.KERNELS[n].device == "cuda" for n in names):
        return
    why = _cuda_status().cuda_unavailable()
    if why is not None:
        raise UsageError(f"CUDA kernels are unavailable here: {why} (tiny layers only: "
                         f"--suite tiny)" if "NUMBA_ENABLE_CUDASIM" in why else
                         f"CUDA kernels are unavailable here: {why}")
