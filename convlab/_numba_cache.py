"""Where Numba keeps convlab's compiled kernels, and what happens when it cannot.

convlab's kernels are decorated ``@njit(cache=True)``: the machine code Numba compiles is
written to disk, so the second process starts in milliseconds instead of recompiling
(compile times are in ``convlab bench``'s records). Numba picks the place when the
decorator runs, i.e. when ``convlab.kernels`` is imported, and tries, in this order
(``numba.core.caching``):

1. ``NUMBA_CACHE_DIR`` (``numba.config.CACHE_DIR``), when set;
2. a ``__pycache__`` folder next to the kernel's source file;
3. the user-wide cache folder (``~/.cache/numba`` on Linux, ``$XDG_CACHE_HOME/numba``).

A place counts when its folder can be created and a file written in it. When none can,
Numba does not fall back to compiling in memory: it raises ``RuntimeError: cannot cache
function ...: no locator available`` and ``import convlab`` fails. That is exactly the
situation of a read-only install (a system site-packages, a container image) used by an
account whose home folder does not exist (``nobody``, many CI and web-server users).

The cache is only an optimisation, so this module, imported by ``convlab/__init__.py``
before the kernels, runs the same test Numba runs on the same places. If none passes it
points ``numba.config.CACHE_DIR`` at a fresh private folder (``tempfile.mkdtemp``: mode
0700, a new name each time, because Numba unpickles what it finds there and a shared,
predictable folder would let another user plant code), deletes it when the process exits,
and warns once. The kernels then compile once per process, as they would without
``cache=True``; set ``NUMBA_CACHE_DIR`` to a writable folder to keep them between runs.

The private folder is set in Numba's configuration, not in ``os.environ``, so child
processes are not pointed at a folder that disappears with this one. One consequence:
Numba re-reads its configuration from the environment when a ``NUMBA_*`` variable changes,
which resets the setting; code compiled with ``cache=True`` after that (by convlab or
anyone else) meets Numba's own behaviour again.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from numba.core import config as _numba_config

# numba.core.config fills in its settings (CACHE_DIR, DISABLE_JIT, ...) from the environment
# through globals() when it loads, so a type checker sees none of them: they are Any here.
config: Any = _numba_config

PACKAGE_DIR = Path(__file__).resolve().parent


class NumbaCacheWarning(RuntimeWarning):
    """Numba cannot keep compiled kernels between runs; they compile in every process."""


def writable_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` exists or can be created, and a file can be written in it.

    The test Numba itself applies to a cache folder (``_CacheLocator.ensure_cache_path``):
    permission bits are not enough (root ignores them; read-only mounts do not show in them).
    """
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def user_wide_cache_dir() -> str:
    """The user-wide folder Numba caches into when the source's ``__pycache__`` is not writable."""
    try:
        from numba.misc.appdirs import AppDirs
    except ImportError:  # moved in some Numba: the XDG rule it implements on Linux
        return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                            "numba")
    return AppDirs(appname="numba", appauthor=False).user_cache_dir


def source_dirs(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every folder of the package that holds Python source (any of them may hold a kernel)."""
    return sorted({p.parent for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts})


def numba_cache_location(package_dir: Path = PACKAGE_DIR, cache_dir: str | None = None,
                         user_dir: str | None = None) -> str | None:
    """Where Numba will cache convlab's kernels, or None when it has nowhere to write.

    ``cache_dir`` defaults to ``numba.config.CACHE_DIR`` and ``user_dir`` to
    :func:`user_wide_cache_dir`; tests pass their own. Places are tried in Numba's order and
    only as far as needed (testing a place creates its folder, as Numba would).
    """
    cache_dir = config.CACHE_DIR if cache_dir is None else cache_dir
    if cache_dir and writable_dir(cache_dir):
        return cache_dir
    dirs = source_dirs(package_dir)
    if all(writable_dir(d / "__pycache__") for d in dirs):
        return str(package_dir / "__pycache__")
    user_dir = user_wide_cache_dir() if user_dir is None else user_dir
    if writable_dir(user_dir):
        return user_dir
    return None


def private_cache_dir() -> str:
    """A fresh folder only this process can use, removed when the process exits."""
    path = tempfile.mkdtemp(prefix="convlab-numba-cache-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def ensure_numba_can_cache(package_dir: Path = PACKAGE_DIR) -> str | None:
    """Make sure importing the kernels cannot fail for want of a cache folder.

    Returns the private folder it set up, or None when Numba already had a usable place
    (or the JIT is disabled, so nothing is cached).
    """
    if config.DISABLE_JIT or numba_cache_location(package_dir) is not None:
        return None
    try:
        path = private_cache_dir()
    except OSError as exc:  # no writable temp folder either: nothing left to try
        raise RuntimeError(
            f"convlab cannot run: Numba needs a writable folder for its compiled kernels, "
            f"the install folder and {user_wide_cache_dir()} are not writable and a "
            f"temporary folder failed ({exc}). Set NUMBA_CACHE_DIR to a writable folder."
        ) from None
    tried = ([f"NUMBA_CACHE_DIR={config.CACHE_DIR}"] if config.CACHE_DIR else []) + [
        f"__pycache__ folders under {package_dir}", user_wide_cache_dir()]
    config.CACHE_DIR = path
    warnings.warn(
        f"Numba cannot write its cache of compiled kernels (tried: {', '.join(tried)}), so "
        f"convlab's kernels compile again in every process. Set NUMBA_CACHE_DIR to a writable "
        f"folder to keep them between runs.", NumbaCacheWarning, stacklevel=2)
    return path


PRIVATE_CACHE_DIR = ensure_numba_can_cache()
"""The private folder set up on import, or None when Numba had a place of its own."""
