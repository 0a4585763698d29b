"""convlab installed read-only, used by an account without a home: it must still work.

Numba's on-disk cache needs a writable folder; without one Numba refuses to define a
``cache=True`` function and ``import convlab`` used to fail ("no locator available").
convlab/_numba_cache.py gives Numba a private folder instead, with one warning.

The places are made unusable in a way that also holds for root (CI often runs as root,
and root ignores permission bits): each ``__pycache__`` of the installed package is a
regular *file*, and HOME lies under a regular file, so no folder can be created there.
The permission bits are removed as well, for the non-root case.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from convlab import _numba_cache

REPO = Path(__file__).resolve().parent.parent

CONV_SCRIPT = """
import warnings
import numpy as np
import convlab
from convlab import _numba_cache
print("module", convlab.__file__)
print("private", _numba_cache.PRIVATE_CACHE_DIR)
rng = np.random.default_rng(7)
x = rng.standard_normal((2, 6, 9, 11)).astype(np.float32)
w = rng.standard_normal((4, 6, 3, 3)).astype(np.float32)
b = rng.standard_normal(4).astype(np.float32)
spec = convlab.ConvSpec.from_shapes(x.shape, w.shape, padding=(1, 2))
expected = convlab.conv2d_reference(x, w, b, spec)
for algo in ("parallel", "im2col", "winograd_f4"):
    y = convlab.conv2d(x, w, b, padding=(1, 2), algo=algo)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    print("ok", algo)
"""


def _unusable(path: Path) -> None:
    """Make ``path`` a regular file, so no folder can ever be created at or under it."""
    if path.is_dir():
        shutil.rmtree(path)
    path.write_text("not a folder\n")


def _install_read_only(tmp: Path) -> Path:
    """A non-editable ``pip install --target`` of this checkout, then made unwritable."""
    src = tmp / "src"  # build from a copy: setuptools leaves build/ in the source tree
    shutil.copytree(REPO / "convlab", src / "convlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    site = tmp / "site"
    isolation = [] if importlib.util.find_spec("setuptools") is None else [
        "--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    *isolation, "--target", str(site), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    package = site / "convlab"
    for folder in {p.parent for p in package.rglob("*.py")}:
        _unusable(folder / "__pycache__")
    for path in [site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return site


def _run(site: Path, tmp: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -S args`` with only the read-only install and the dependencies on the path.

    ``-S`` skips the .pth files, so an editable install of convlab in this environment
    cannot shadow the read-only one; the dependencies come from site-packages directly.
    """
    (tmp / "nothome").write_text("a file where a home folder would be\n")
    (tmp / "tmpdir").mkdir(exist_ok=True)
    deps = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_", "PYTHON", "XDG_"))}
    env.update(HOME=str(tmp / "nothome" / "home"), TMPDIR=str(tmp / "tmpdir"),
               PYTHONPATH=os.pathsep.join([str(site), *deps]))
    return subprocess.run([sys.executable, "-S", *args], cwd=tmp / "tmpdir", env=env,
                          capture_output=True, text=True, timeout=600)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Warning:" in line]


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("readonly")
    site = _install_read_only(tmp)
    yield site, tmp
    for path in [site, *site.rglob("*")]:  # let pytest clean up
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.slow
def test_kernels_run_from_a_read_only_install_without_a_home(read_only):
    site, tmp = read_only
    proc = _run(site, tmp, ["-c", CONV_SCRIPT])
    assert proc.returncode == 0, proc.stderr
    assert f"module {site / 'convlab' / '__init__.py'}" in proc.stdout  # not the checkout
    assert [line for line in proc.stdout.splitlines() if line.startswith("ok ")] == [
        "ok parallel", "ok im2col", "ok winograd_f4"]
    warned = _warnings(proc.stderr)
    assert len(warned) == 1 and "NumbaCacheWarning" in warned[0], proc.stderr
    assert "NUMBA_CACHE_DIR" in warned[0]
    assert "Traceback" not in proc.stderr
    # the private cache folder was used, then removed when the process ended
    assert "private " + str(tmp / "tmpdir") in proc.stdout
    assert list((tmp / "tmpdir").iterdir()) == []


@pytest.mark.slow
def test_shape_command_from_a_read_only_install_without_a_home(read_only):
    site, tmp = read_only
    script = site / "bin" / "convlab"  # the console script pip wrote
    proc = _run(site, tmp, [str(script), "shape", "--input", "1,5,10,12",
                            "--out-channels", "2", "--kernel-size", "3"])
    assert proc.returncode == 0, proc.stderr
    assert "output           (1, 2, 8, 10)" in proc.stdout
    assert len(_warnings(proc.stderr)) <= 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cache_location_follows_numbas_order(tmp_path):
    package = tmp_path / "pkg"
    (package / "kernels").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "kernels" / "k.py").write_text("")
    user, given = tmp_path / "user-cache", tmp_path / "given"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    # a writable package: its own __pycache__, as Numba's in-tree locator would use
    assert _numba_cache.numba_cache_location(package, "", str(user)) == str(
        package / "__pycache__")
    # NUMBA_CACHE_DIR comes first when it is usable, and is ignored when it is not
    assert _numba_cache.numba_cache_location(package, str(given), str(user)) == str(given)
    _unusable(package / "kernels" / "__pycache__")  # one source folder blocked is enough
    assert _numba_cache.numba_cache_location(package, str(blocked / "x"), str(user)) == str(
        user)
    # nothing usable: None, the case where convlab must set up its private folder
    assert _numba_cache.numba_cache_location(package, "", str(blocked / "numba")) is None


def test_private_cache_dir_is_private(tmp_path, monkeypatch):
    monkeypatch.setattr(_numba_cache.tempfile, "tempdir", str(tmp_path))
    path = Path(_numba_cache.private_cache_dir())
    assert path.parent == tmp_path and path.is_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700  # Numba unpickles what it finds there
    assert Path(_numba_cache.private_cache_dir()) != path  # a fresh one each time
