"""How many blocks of a CUDA kernel share a multiprocessor, and how many waves a grid takes.

A GPU hides the latency of memory (hundreds of cycles) by switching between *warps*
(groups of 32 threads): while one waits, another computes.  So each multiprocessor (SM)
wants many warps resident at once, and it holds as many blocks as its resources allow:

* **registers**: 64K 32-bit registers per SM, split over 4 sub-partitions; a warp gets
  ``registers per thread x 32`` rounded up to 256.  A kernel that uses 167 registers per
  thread gets 12 warps on an SM, 80 registers give 24;
* **shared memory**: each block's tiles (plus 1 KB the system reserves per block from
  sm_80 on), out of up to 64 KB (T4), 164 KB (A100) or 228 KB (H100) per SM;
* **threads and blocks**: at most 1024 (sm_75) or 2048 threads and 16 or 32 blocks per SM.

*Occupancy* is the number of warps an SM holds, out of its maximum (32 or 64).  More
warps hide latency better; fewer registers per thread hold fewer partial sums (V. Volkov,
"Better performance at lower occupancy", GTC 2010).  ``cuda_tiled`` aims at
:data:`convlab.kernels.cuda.MIN_WARPS_PER_SM` warps and caps its registers with
:func:`register_cap` so they fit.

A grid of B blocks runs in ``B / (blocks per SM x SMs)`` *waves*; 1.7 waves means the
last wave leaves most SMs idle.  The arithmetic below is NVIDIA's occupancy calculator
(``cuda_occupancy.h``, shipped with the CUDA runtime) for the limits these kernels meet
(one barrier, static shared memory, the driver's default carveout, which takes as much
shared memory as occupancy needs).  ``convlab info --cuda-static`` applies it to the
register counts the CUDA toolchain reports (:mod:`convlab.cuda_static`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WARP = 32


@dataclass(frozen=True)
class GpuModel:
    """The per-SM limits of one GPU (CUDA Programming Guide, "Compute Capabilities")."""

    name: str
    arch: tuple[int, int]  # compute capability, e.g. (9, 0) for sm_90
    sms: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    smem_per_sm: int  # bytes, the largest carveout
    reserved_smem_per_block: int  # bytes the system keeps per block (sm_80 on)
    smem_granularity: int  # shared memory is allocated in units of this many bytes
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    reg_granularity: int = 256  # registers per warp are allocated in these units
    max_regs_per_thread: int = 255
    subpartitions: int = 4  # registers are split over this many warp schedulers

    @property
    def sm(self) -> str:
        return f"sm_{self.arch[0]}{self.arch[1]}"

    @property
    def max_warps_per_sm(self) -> int:
        return self.max_threads_per_sm // WARP


GPUS: dict[str, GpuModel] = {
    "T4": GpuModel("T4", (7, 5), 40, 1024, 16, 64 * 1024, 0, 256),
    "A100": GpuModel("A100", (8, 0), 108, 2048, 32, 164 * 1024, 1024, 128),
    "H100": GpuModel("H100", (9, 0), 132, 2048, 32, 228 * 1024, 1024, 128),  # also H200
}
DEFAULT_GPU = GPUS["H100"]


def _regs_per_warp(gpu: GpuModel, regs: int) -> int:
    return math.ceil(regs * WARP / gpu.reg_granularity) * gpu.reg_granularity


def blocks_by_registers(gpu: GpuModel, threads: int, regs: int) -> int:
    """Blocks of ``threads`` threads using ``regs`` registers each that fit one SM's
    register file (0: the block cannot launch at all)."""
    warps = math.ceil(threads / WARP)
    per_warp = _regs_per_warp(gpu, max(regs, 1))
    assumed = per_warp * math.ceil(warps / gpu.subpartitions) * gpu.subpartitions
    if regs > gpu.max_regs_per_thread or assumed > gpu.regs_per_block:
        return 0
    warps_per_sm = (gpu.regs_per_sm // gpu.subpartitions // per_warp) * gpu.subpartitions
    return warps_per_sm // warps


@dataclass(frozen=True)
class Occupancy:
    """What one SM holds of a kernel, and what a grid of ``blocks`` does with it."""

    blocks_per_sm: int
    limited_by: str  # "registers", "shared memory", "threads" or "blocks"
    warps_per_block: int
    max_warps_per_sm: int
    sms: int
    blocks: int

    @property
    def warps_per_sm(self) -> int:
        """Warps one SM can hold (the occupancy limit)."""
        return self.blocks_per_sm * self.warps_per_block

    @property
    def resident_warps_per_sm(self) -> float:
        """Warps per SM in the first wave, on average: the limit, or fewer when the
        grid has too few blocks to give every SM its share."""
        return min(self.blocks_per_sm, self.blocks / self.sms) * self.warps_per_block

    @property
    def waves(self) -> float:
        return math.inf if not self.blocks_per_sm else (
            self.blocks / (self.blocks_per_sm * self.sms))


def occupancy(gpu: GpuModel, threads: int, regs: int, smem: int, blocks: int = 0) -> Occupancy:
    """Blocks per SM for a kernel of ``threads`` threads per block, ``regs`` registers per
    thread and ``smem`` bytes of static shared memory per block, and which limit binds."""
    warps = math.ceil(threads / WARP)
    per_block = math.ceil((smem + gpu.reserved_smem_per_block) / gpu.smem_granularity
                          ) * gpu.smem_granularity
    limits = {
        "threads": gpu.max_warps_per_sm // warps,
        "blocks": gpu.max_blocks_per_sm,
        "registers": blocks_by_registers(gpu, threads, regs),
        "shared memory": gpu.smem_per_sm // per_block if per_block else gpu.max_blocks_per_sm,
    }
    limited_by = min(limits, key=lambda k: limits[k])
    return Occupancy(limits[limited_by], limited_by, warps, gpu.max_warps_per_sm, gpu.sms,
                     blocks)


def min_blocks(threads: int, min_warps: int) -> int:
    """Blocks of ``threads`` threads that make at least ``min_warps`` warps (at least 1)."""
    return max(1, math.ceil(min_warps / math.ceil(threads / WARP)))


def register_cap(threads: int, min_warps: int, gpu: GpuModel = DEFAULT_GPU) -> int:
    """The most registers per thread (a multiple of 8) that still let ``min_warps`` warps
    of ``threads``-thread blocks share an SM (or one block, for blocks that big): what
    ptxas allows a kernel compiled with launch bounds ``(threads, min_blocks)``.  64K
    registers per SM, as on every GPU from sm_75 to sm_90, so the cap does not depend on
    the model."""
    want = min_blocks(threads, min_warps)
    for regs in range(gpu.max_regs_per_thread // 8 * 8, 7, -8):
        if blocks_by_registers(gpu, threads, regs) >= want:
            return regs
    raise ValueError(f"no register count lets {want} blocks of {threads} threads share an SM")
