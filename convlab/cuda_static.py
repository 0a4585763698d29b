"""What NVIDIA's compiler makes of convlab's CUDA kernels, without a GPU.

``convlab info --cuda-static`` compiles every kernel variant the dispatcher can pick for
the ResNet layers (``cuda_naive``, and ``cuda_tiled`` in the tiles
:func:`~convlab.kernels.cuda.choose_config` gives each layer on that GPU) for named GPU
models (T4 = sm_75, A100 = sm_80, H100/H200 = sm_90), exactly as ``numba.cuda`` compiles
them on a real card: Numba -> NVVM -> LTO-IR, linked by nvJitLink (which runs ptxas) with
the same register cap.  ptxas's verbose output gives registers per thread, spills and
shared memory; :mod:`convlab.occupancy` turns them into blocks and warps per
multiprocessor and waves per launch.  No GPU is needed, only the compiler wheels::

    pip install 'convlab[cuda]'
    convlab info --cuda-static

Spills (registers stored to slow local memory), an occupancy limit under
:data:`~convlab.kernels.cuda.MIN_WARPS_PER_SM` warps per SM (what the launch bounds size the
registers for) and a first wave under :data:`~convlab.kernels.cuda.FILL_WARPS_PER_SM` (what
``choose_config`` asks of the grid, measured on an H200) are marked.  What the numbers
mean is in :mod:`convlab.occupancy`; whether they make the kernel fast only a GPU can say
(``scripts/gpu_check.py`` times the tiles against cuDNN).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from .occupancy import GPUS, GpuModel, occupancy
from .shapes import ConvSpec

TOOLCHAIN_HINT = ("pip install 'convlab[cuda]' (numba-cuda with NVIDIA's NVVM and nvJitLink "
                  "wheels; no GPU needed)")
BATCH = 8  # the benchmark's default batch (convlab.bench.DEFAULT_BATCH)


def toolchain_missing() -> str | None:
    """None when kernels can be compiled here for any GPU model, else why not and how to
    get the toolchain (one line)."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba always ships numba.cuda
        return f"numba.cuda cannot be imported ({exc}); {TOOLCHAIN_HINT}"
    if ".simulator" in getattr(cuda.jit, "__module__", ""):
        return ("NUMBA_ENABLE_CUDASIM=1 replaces the compiler by the simulator; run without "
                "it")
    if not hasattr(cuda, "compile") or "numba_cuda" not in (cuda.__file__ or ""):
        return f"the numba-cuda package is not installed; {TOOLCHAIN_HINT}"
    try:
        from numba.cuda.cudadrv import driver, nvvm

        nvvm.NVVM()
    except Exception as exc:
        return f"libNVVM cannot be loaded ({type(exc).__name__}: {exc}); {TOOLCHAIN_HINT}"
    # numba-cuda's driver (checked above); a type checker reads the older numba.cuda
    # built into numba, whose driver has no _have_nvjitlink
    cuda_driver: Any = driver
    if not cuda_driver._have_nvjitlink():
        return f"nvJitLink cannot be loaded; {TOOLCHAIN_HINT}"
    return None


def toolchain_versions() -> dict[str, str | None]:
    """Versions of the compiler pieces (None: not installed)."""

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    out: dict[str, str | None] = {p: version(p) for p in (
        "numba", "numba-cuda", "nvidia-cuda-nvcc-cu12", "nvidia-nvjitlink-cu12",
        "cuda-bindings")}
    try:
        from numba.cuda.cudadrv import nvvm

        out["nvvm_ir"] = ".".join(map(str, nvvm.NVVM().get_ir_version()))
    except Exception:
        out["nvvm_ir"] = None
    try:
        from cuda.bindings import nvjitlink

        out["nvjitlink"] = ".".join(map(str, nvjitlink.version()))
    except Exception:
        out["nvjitlink"] = None
    return out


@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one compiled kernel."""

    registers: int
    spill_stores: int  # bytes per thread
    spill_loads: int
    stack: int  # bytes of local memory per thread (spills and local arrays)
    smem: int  # bytes of static shared memory per block
    log: str  # ptxas's lines, for the record


_NUM = {
    "registers": r"Used (\d+) registers",
    "stack": r"(\d+) bytes stack frame",
    "spill_stores": r"(\d+) bytes spill stores",
    "spill_loads": r"(\d+) bytes spill loads",
    "smem": r"(\d+) bytes smem",
}


def parse_ptxas(log: str) -> Resources:
    """Registers, spills, stack and shared memory from ptxas's verbose output."""
    found = {key: re.search(pat, log) for key, pat in _NUM.items()}
    if found["registers"] is None:
        raise ValueError(f"no 'Used N registers' line in the compiler's output:\n{log}")
    values = {key: int(m.group(1)) if m else 0 for key, m in found.items()}
    lines = "\n".join(ln.strip() for ln in log.splitlines() if "ptxas" in ln)
    return Resources(log=lines, **values)


def compile_resources(pyfunc: Any, argtypes: tuple[Any, ...], arch: tuple[int, int],
                      options: dict[str, Any] | None = None) -> Resources:
    """Compile a kernel's Python function for ``arch`` as the numba-cuda dispatcher does
    on a GPU (NVVM to LTO-IR, then nvJitLink) with the ``cuda.jit`` ``options`` it is
    built with (``launch_bounds`` or ``max_registers``), and read ptxas's report."""
    from numba import cuda, types

    try:
        from cuda.core import Linker, LinkerOptions, ObjectCode
    except ImportError:  # older cuda-core
        from cuda.core.experimental import Linker, LinkerOptions, ObjectCode

    options = options or {}
    ltoir, _ = cuda.compile(pyfunc, types.void(*argtypes), device=False, abi="numba",
                            cc=arch, output="ltoir",
                            launch_bounds=options.get("launch_bounds"))
    link = LinkerOptions(arch=f"sm_{arch[0]}{arch[1]}",
                         max_register_count=options.get("max_registers"),
                         link_time_optimization=True, verbose=True)
    linker = Linker(ObjectCode.from_ltoir(ltoir), options=link)
    try:
        linker.link("cubin")
        log = linker.get_info_log()
    finally:
        linker.close()
    return parse_ptxas(log)


def _argtypes(dtype: str, ints: int) -> tuple[Any, ...]:
    from numba import types

    dt = types.float32 if dtype == "float32" else types.float64
    arr4, arr1 = types.Array(dt, 4, "C"), types.Array(dt, 1, "C")
    return (arr4, arr4, arr1, arr4) + (types.int64,) * ints


@dataclass(frozen=True)
class Variant:
    """One kernel the dispatcher would launch for a layer on a GPU model."""

    kernel: str
    layer: str
    dtype: str
    config: tuple[int, ...] | None  # cuda_tiled's (tk, rk, th, tw, rp, ck)
    threads: int
    blocks: int
    options: dict[str, Any]  # the cuda.jit options it is compiled with
    pyfunc: Any
    argtypes: tuple[Any, ...]

    @property
    def cap(self) -> int | None:
        """The registers per thread its options allow (None: up to ptxas, 255)."""
        from .occupancy import register_cap

        if "max_registers" in self.options:
            return int(self.options["max_registers"])
        if "launch_bounds" in self.options:
            threads, blocks = self.options["launch_bounds"]
            return register_cap(threads, blocks * math.ceil(threads / 32))
        return None


def variants(gpu: GpuModel, layers: Sequence[Any] | None = None,
             dtypes: Sequence[str] = ("float32",), batch: int = BATCH) -> list[Variant]:
    """The variants the dispatcher picks on ``gpu`` for ``layers`` (default: the ResNet
    suite) at ``batch``: ``cuda_naive`` (one per dtype) and ``cuda_tiled`` per layer."""
    from .bench.suites import RESNET
    from .kernels import _cuda_device as dev
    from .kernels import cuda as ck
    out = []
    for dtype in dtypes:
        naive = dev.naive_kernel()
        itemsize = np.dtype(dtype).itemsize
        for layer in layers if layers is not None else RESNET:
            spec: ConvSpec = layer.spec(batch)
            total = math.prod(spec.batched_output_shape)
            out.append(Variant("cuda_naive", layer.name, dtype, None, ck.THREADS_NAIVE,
                               math.ceil(total / ck.THREADS_NAIVE), {}, naive.py_func,
                               _argtypes(dtype, 6)))
            cfg = ck.choose_config(spec, itemsize, gpu.sms, gpu.smem_per_sm)
            if cfg.problem(spec, itemsize):
                continue  # the dispatcher refuses it too, with the reason
            (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
            source, threads = dev.tiled_source(dtype, kh, kw, sh, sw, dh, dw, cfg)
            out.append(Variant("cuda_tiled", layer.name, dtype, tuple(cfg), threads,
                               math.prod(cfg.grid(spec)), dev.jit_options(threads), source,
                               _argtypes(dtype, 2)))
    return out


@dataclass(frozen=True)
class Row:
    """One line of the static report."""

    gpu: str
    variant: Variant
    resources: Resources
    blocks_per_sm: int
    limited_by: str
    warps_per_sm: int
    resident_warps_per_sm: float
    waves: float

    @property
    def problems(self) -> list[str]:
        from .kernels.cuda import FILL_WARPS_PER_SM, MIN_WARPS_PER_SM

        found = []
        if self.resources.spill_stores or self.resources.spill_loads:
            found.append("SPILLS")
        if self.variant.kernel == "cuda_tiled" and self.warps_per_sm < MIN_WARPS_PER_SM:
            found.append(f"< {MIN_WARPS_PER_SM} WARPS")
        if self.variant.kernel == "cuda_tiled" and self.resident_warps_per_sm < FILL_WARPS_PER_SM:
            found.append(f"< {FILL_WARPS_PER_SM} RESIDENT")
        return found


def static_report(gpus: Sequence[str] = ("T4", "A100", "H100"),
                  dtypes: Sequence[str] = ("float32", "float64"),
                  layers: Sequence[Any] | None = None) -> list[Row]:
    """Compile and measure every variant on every named GPU (raises RuntimeError with
    :func:`toolchain_missing`'s reason when the toolchain is not here)."""
    why = toolchain_missing()
    if why is not None:
        raise RuntimeError(why)
    rows = []
    compiled: dict[tuple[Any, ...], Resources] = {}  # the same kernel serves many layers
    for name in gpus:
        gpu = GPUS[name]
        for v in variants(gpu, layers, dtypes):
            key = (v.pyfunc, v.argtypes, gpu.arch, tuple(sorted(v.options.items())))
            if key not in compiled:
                compiled[key] = compile_resources(v.pyfunc, v.argtypes, gpu.arch, v.options)
            res = compiled[key]
            occ = occupancy(gpu, v.threads, res.registers, res.smem, v.blocks)
            rows.append(Row(name, v, res, occ.blocks_per_sm, occ.limited_by, occ.warps_per_sm,
                            occ.resident_warps_per_sm, occ.waves))
    return rows


def format_static_report(rows: Sequence[Row]) -> str:
    """The report people read: one table per GPU model."""
    from .kernels.cuda import FILL_WARPS_PER_SM, MIN_WARPS_PER_SM

    versions = toolchain_versions()
    lines = ["static report: kernels compiled offline as numba.cuda compiles them on a GPU "
             "(NVVM -> LTO-IR -> nvJitLink/ptxas); " + ", ".join(
                 f"{k} {v}" for k, v in versions.items() if v),
             f"batch {BATCH}; warps/SM = the occupancy limit; resident = warps per SM in the "
             f"first wave (fewer when the grid is small); targets: warps/SM >= "
             f"{MIN_WARPS_PER_SM}, resident >= {FILL_WARPS_PER_SM}, no spills"]
    head = (f"  {'kernel':<11}{'layer':<18}{'dtype':<8}{'tiles (tk,rk,th,tw,rp,ck)':<27}"
            f"{'thr':>5}{'blocks':>7}{'cap':>5}{'regs':>5}{'spill':>9}{'smem':>7}"
            f"{'blk/SM':>7}{'warps/SM':>9}{'resident':>9}{'waves':>7}  limit")
    for gpu_name in dict.fromkeys(r.gpu for r in rows):
        gpu = GPUS[gpu_name]
        lines += ["", f"{gpu.name} ({gpu.sm}, {gpu.sms} SMs, {gpu.max_warps_per_sm} warps, "
                      f"{gpu.smem_per_sm // 1024} KB shared memory per SM)", head]
        for r in (r for r in rows if r.gpu == gpu_name):
            v, res = r.variant, r.resources
            spill = f"{res.spill_stores}/{res.spill_loads}"
            cfg = str(v.config) if v.config else "-"
            mark = "  " + " ".join(r.problems) if r.problems else ""
            lines.append(
                f"  {v.kernel:<11}{v.layer:<18}{v.dtype:<8}{cfg:<27}{v.threads:>5}"
                f"{v.blocks:>7}{v.cap or '-':>5}{res.registers:>5}{spill:>9}"
                f"{res.smem:>7}{r.blocks_per_sm:>7}{r.warps_per_sm:>9}"
                f"{r.resident_warps_per_sm:>9.1f}{r.waves:>7.2f}  {r.limited_by}{mark}")
    lines += ["", "cap = registers per thread its launch bounds allow; spill = bytes stored/"
              "loaded per thread; smem = static shared memory per block (bytes)"]
    return "\n".join(lines)
