"""Settings for the whole suite, and the parallel run.

``pytest`` runs the suite on several worker processes (pytest-xdist; ``-n auto --dist
loadfile`` in pyproject.toml): one per CPU this process may use, at most four, one test
file at a time per worker, so a module's fixtures are built once, as in a serial run.
``pytest -n 0`` runs it in this process, one test after the other (``--pdb`` does so too).
The files that hold a test marked ``slow`` or ``notebooks`` are handed out first, so no
long file is left for the end while the other workers idle.

A test whose verdict depends on the machine being otherwise idle (thread states, races
that must show) is marked ``@pytest.mark.alone``: it starts once no other worker is
inside a test, and no other worker starts a test until it is done.
"""

import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The tests must neither read nor write the user's autotuning memory: a kernel measured
# fastest on this machine would change what algo="auto" picks in tests of the rule.
# (Subprocesses and notebook kernels inherit this; each xdist worker has its own.)
os.environ["CONVLAB_TUNE_CACHE"] = os.path.join(
    tempfile.mkdtemp(prefix="convlab-tests-"), "tuning.json")

MAX_WORKERS = 4  # more buys little: each worker compiles the kernels its files need


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: the CPUs this process may run on (logical ones: a 2-vCPU CI machine
    is 2 workers, where psutil may count one physical core), at most MAX_WORKERS."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own rule reads it
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker: the files with slow tests first (xdist hands out files in this order,
    ``--no-loadscope-reorder``); within a file, and otherwise, the order is unchanged."""
    if not hasattr(config, "workerinput"):
        return
    heavy = {item.path for item in items
             if item.get_closest_marker("slow") or item.get_closest_marker("notebooks")}
    items.sort(key=lambda item: item.path not in heavy)  # stable: a file stays together


# ------------------------------------------------------------------ tests that run alone
# A readers-writer lock shared by the workers: every test holds SHARED for its setup, call
# and teardown; an ``alone`` test holds EXCLUSIVE. The gate gives the writer priority:
# once an ``alone`` test waits, no worker starts another test (flock alone would let the
# readers, one after the other, keep it waiting).
_LOCK_DIR = "convlab_lock_dir"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        config._convlab_lock_dir = None  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """The controller gives every worker the same folder for the lock files."""
    config = node.config
    if getattr(config, "_convlab_lock_dir", None) is None:
        config._convlab_lock_dir = tempfile.mkdtemp(prefix="convlab-tests-lock-")
    node.workerinput[_LOCK_DIR] = config._convlab_lock_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = getattr(config, "_convlab_lock_dir", None)
    if folder and not hasattr(config, "workerinput"):
        shutil.rmtree(folder, ignore_errors=True)


_FILES: dict[str, int] = {}


def _lock_fds(folder: str) -> tuple[int, int]:
    if not _FILES:
        for name in ("gate", "tests"):
            _FILES[name] = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o600)
    return _FILES["gate"], _FILES["tests"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator:
    folder = getattr(item.config, "workerinput", {}).get(_LOCK_DIR)
    if folder is None:  # one process: nothing runs beside this test
        return (yield)
    gate, tests = _lock_fds(folder)
    alone = item.get_closest_marker("alone") is not None
    fcntl.flock(gate, fcntl.LOCK_EX)
    try:
        fcntl.flock(tests, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    finally:
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        return (yield)
    finally:
        fcntl.flock(tests, fcntl.LOCK_UN)
        if alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
