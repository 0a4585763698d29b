"""All convolution kernels, imported eagerly so the registry is complete on import.

Adding a kernel is one new module in this package with one ``@register``
decorator: every module here is imported below, nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import (
    KERNELS,
    Choice,
    Kernel,
    KernelUnavailableError,
    Placed,
    UnsupportedSpecError,
    choose,
    get,
    kernels_for,
    ladder,
    output_with_bias,
    register,
    resolve,
)

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "registry" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["KERNELS", "Choice", "Kernel", "KernelUnavailableError", "Placed",
           "UnsupportedSpecError", "choose", "get", "kernels_for", "ladder", "output_with_bias",
           "register", "resolve"]
