"""``cuda_tiled``'s tile configuration and the CUDA limits it is checked against.

Its own module so that the device code (``_cuda_device.py``, which sizes its arrays from
a :class:`TileConfig`) and the host side (``cuda.py``, which chooses one and launches
the kernels) both import it, and neither imports the other's caller: ``cuda.py`` loads
``_cuda_device`` on first use, and nothing here loads either (no import loop).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..shapes import ConvSpec

SHARED_LIMIT = 48 * 1024  # bytes of static shared memory one block may declare
MAX_GRID_YZ = 65535  # CUDA's limit on gridDim.y and gridDim.z
# Warps a multiprocessor should hold of cuda_tiled (of 32 on sm_75, 64 on sm_80/sm_90): the
# tiles are chosen so the grid has that many per SM, and the registers capped so they fit
# (convlab/occupancy.py says why; `convlab info --cuda-static` shows what the toolchain made).
MIN_WARPS_PER_SM = 16


class TileConfig(NamedTuple):
    """How ``cuda_tiled`` cuts the work: the block and per-thread tiles."""

    tk: int = 64  # output channels per block
    rk: int = 8  # output channels per thread (register blocking)
    th: int = 8  # output rows per block
    tw: int = 16  # output columns per block
    rp: int = 4  # output pixels per thread (register blocking)
    ck: int = 8  # input channels staged in shared memory per step

    @property
    def threads(self) -> int:
        return (self.tk // self.rk) * (self.th * self.tw // self.rp)

    def patch(self, spec: ConvSpec) -> tuple[int, int]:
        """Rows and columns of the input patch one block stages: tile + halo."""
        (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
        return (self.th - 1) * sh + (kh - 1) * dh + 1, (self.tw - 1) * sw + (kw - 1) * dw + 1

    def shared_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        ph, pw = self.patch(spec)
        kh, kw = spec.kernel_size
        # weights stored (ck*kh*kw, tk + 1): the +1 keeps a column's elements in
        # different banks, so the transposing store is free of bank conflicts
        return itemsize * (self.ck * ph * pw + self.ck * kh * kw * (self.tk + 1))

    def grid(self, spec: ConvSpec) -> tuple[int, int, int]:
        kg = spec.out_channels // spec.groups
        tiles = math.ceil(spec.out_height / self.th) * math.ceil(spec.out_width / self.tw)
        return tiles, math.ceil(kg / self.tk) * spec.groups, spec.batch

    def problem(self, spec: ConvSpec, itemsize: int) -> str | None:
        """Why this config cannot run ``spec`` (None = it can)."""
        if min(self) < 1:
            return f"needs positive tile sizes, got {self}"
        if self.tk % self.rk or (self.th * self.tw) % self.rp:
            return f"needs tk % rk == 0 and th*tw % rp == 0, got {self}"
        if not 1 <= self.threads <= 1024:
            return f"needs 1..1024 threads per block, got {self.threads} for {self}"
        need = self.shared_bytes(spec, itemsize)
        if need > SHARED_LIMIT:
            return (f"needs {need:,} bytes of shared memory for {self} (limit "
                    f"{SHARED_LIMIT:,}): the kernel window or stride is too large")
        _, gy, gz = self.grid(spec)
        if gy > MAX_GRID_YZ or gz > MAX_GRID_YZ:
            return (f"needs batch <= {MAX_GRID_YZ} and ceil(out_channels/groups/{self.tk})"
                    f"*groups <= {MAX_GRID_YZ}")
        return None
