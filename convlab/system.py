"""What machine is this?  Versions, CPU, threads, and whether CUDA can run.

Used by ``convlab info`` and stamped into every benchmark record, because a
timing without its machine is not a result.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def threading_layer() -> str:
    """Numba's threading layer ('omp', 'tbb' or 'workqueue'; see convlab/threads.py for
    what each means for calling convlab from several threads)."""
    from .threads import threading_layer as layer

    return layer()


COMPILER_HINT = ("pip install 'convlab[cuda]' (numba-cuda with NVIDIA's NVVM and nvJitLink "
                 "wheels), or install the CUDA toolkit and set CUDA_HOME to it")


def cuda_compiler_missing() -> str | None:
    """None when ``numba.cuda`` can compile kernels here (libNVVM loads and libdevice is
    found), else what is missing.  A GPU driver alone is not enough: every kernel is
    compiled by NVIDIA's libNVVM when it is first launched."""
    try:
        from numba.cuda.cudadrv import libs, nvvm

        nvvm.NVVM()
        path = libs.get_libdevice()
        if not path or not os.path.exists(path):
            return "libdevice (NVIDIA's math library for NVVM) is not found"
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"libNVVM cannot be loaded ({type(exc).__name__}{': ' + detail if detail else ''})"
    return None


class CudaStatus(str):
    """Where CUDA kernels can run: ``kind`` is "gpu" (``detail``: its name), "simulator"
    (``detail``: how it runs) or "missing" (``detail``: why, and how to get CUDA).

    It is also the one line people read ('gpu: NAME', 'simulator (...)', 'missing: ...'),
    a ``str``, so it prints, compares and goes into JSON as before; code asks ``kind``
    instead of matching the text's prefix."""

    kind: str
    detail: str

    def __new__(cls, kind: str, detail: str) -> CudaStatus:
        if kind not in ("gpu", "simulator", "missing"):
            raise ValueError(f"unknown CUDA status {kind!r}")
        text = f"simulator ({detail})" if kind == "simulator" else f"{kind}: {detail}"
        status = super().__new__(cls, text)
        status.kind, status.detail = kind, detail
        return status

    def __reduce__(self) -> tuple[Any, ...]:
        return (CudaStatus, (self.kind, self.detail))

    @property
    def usable(self) -> bool:
        """CUDA kernels can run here (a GPU or the simulator)."""
        return self.kind != "missing"


def cuda_status() -> CudaStatus:
    """A GPU (``kind == "gpu"``), the simulator, or missing (with how to get it).

    The simulator is recognised by the ``numba.cuda`` module actually imported
    (numba reads NUMBA_ENABLE_CUDASIM when it is first imported, not later).  A GPU
    counts only when its driver answers *and* the compiler (libNVVM) loads: with the
    driver alone every kernel launch would fail to compile.
    """
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba always ships cuda or numba-cuda
        return CudaStatus("missing", f"numba.cuda cannot be imported ({exc}); pip install "
                          "'convlab[cuda]'")
    if ".simulator" in getattr(cuda.jit, "__module__", ""):
        return CudaStatus("simulator", "NUMBA_ENABLE_CUDASIM=1: kernels run on the CPU, one "
                          "thread at a time")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return CudaStatus("missing", "NUMBA_ENABLE_CUDASIM=1 was set after numba was imported; "
                          "set it before importing convlab (or numba), e.g. in the shell")
    try:
        if cuda.is_available():
            name = cuda.get_current_device().name
            name = name.decode() if isinstance(name, bytes) else name
            why = cuda_compiler_missing()
            if why is not None:
                return CudaStatus("missing", f"a CUDA GPU ({name}) and its driver are here, but "
                                  f"numba.cuda cannot compile kernels for it: {why}; "
                                  f"{COMPILER_HINT}")
            return CudaStatus("gpu", name)
    except Exception as exc:  # driver present but broken
        return CudaStatus("missing", f"CUDA driver error ({exc})")
    return CudaStatus("missing", "no CUDA GPU found; install 'convlab[cuda]' on a machine with "
                      "an NVIDIA GPU, or set NUMBA_ENABLE_CUDASIM=1 before importing convlab "
                      "to use the CPU simulator")


def describe() -> dict[str, Any]:
    """The machine as plain data."""
    import numba

    # numba.config sets NUMBA_NUM_THREADS (and its other settings) through globals() when it
    # loads, so the type checker cannot see it
    numba_config: Any = numba.config
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "numba_threads": numba_config.NUMBA_NUM_THREADS,
        "threading_layer": threading_layer(),
        "versions": {pkg: _version(pkg) for pkg in
                     ("convlab", "numpy", "numba", "llvmlite", "scipy", "matplotlib", "torch",
                      "numba-cuda")},
        "cuda": cuda_status(),
    }
