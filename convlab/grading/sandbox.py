"""One sandbox per graded notebook: what it sees, what it may use, how it starts.

:func:`command` returns the command line that runs a worker in a sandbox built by
:mod:`._sandbox_init` (Linux user, mount, PID, network, IPC and UTS namespaces, no root
needed; see that module for how). What the sandbox sees:

* read-only: the system folders (``/usr``, ``/etc``, ...) and the Python installation
  the grader runs (its prefix, base prefix and site-packages), except any folder that
  holds a ``convlab`` source tree (the teacher's checkout, with the solution notebooks);
* read-only at ``/sandbox/pkg``: a copy of the convlab package *without* the reference
  solutions (:data:`TRUSTED_ONLY`: ``solutions.py`` becomes a stub whose functions raise,
  the trusted verdict module is left out) -- the only convlab a graded notebook can import;
* read-only at ``/sandbox/job``: the job (notebook name, limits, check cells, this run's cases);
* writable, each a size-capped tmpfs private to the sandbox: ``/sandbox/work`` (a copy of the
  submission), the home, ``/tmp`` and ``/dev/shm``;
* nothing else: no other home, no other submission, no earlier grades, no network
  (loopback only, its own), no process outside its PID namespace.

Limits: address space (``RLIMIT_AS``: every mapping, shared ones included), processes
(``RLIMIT_NPROC``, counted inside the namespace), file size, CPU seconds, no core dumps;
the tmpfs sizes cap the disk and shared memory.

:func:`unavailable` says, in one line, why sandboxes cannot be built here (or None).
"""

from __future__ import annotations

import ast
import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

HOME = "/home/student"
WORK, JOB, PKG = "/sandbox/work", "/sandbox/job", "/sandbox/pkg"
INIT = Path(__file__).with_name("_sandbox_init.py")
PACKAGE = Path(__file__).resolve().parents[1]
# never copied into a sandbox: the reference solutions and the grader's own verdicts
TRUSTED_ONLY = ("exercises/solutions.py", "grading/answers.py")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
STUDENT_UID = 1000
PROCESSES = 256  # threads count too: a kernel, Numba's pool and the worker use ~40
ADDRESS_SPACE = 1 << 30  # beyond --memory: what Numba/LLVM and threads reserve untouched
ENV = ("LANG", "LC_ALL", "TZ")  # kept from the grader's environment; nothing else is


def _stub(names: list[str]) -> str:
    lines = ['"""Not in a graded run: convlab grade leaves the reference solutions out."""',
             "", "", "def _unavailable(*args, **kwargs):",
             "    raise RuntimeError('solution() is not available while convlab grade runs "
             "this notebook')", ""]
    return "\n".join(lines + [f"{n} = _unavailable" for n in names]) + "\n"


@functools.lru_cache(maxsize=1)
def package_copy() -> Path:
    """This convlab, without :data:`TRUSTED_ONLY`, in a folder removed at exit."""
    top = Path(tempfile.mkdtemp(prefix="convlab-sandbox-pkg-"))
    atexit.register(shutil.rmtree, top, True)
    shutil.copytree(PACKAGE, top / "convlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel in TRUSTED_ONLY:
        (top / "convlab" / rel).unlink(missing_ok=True)
    tree = ast.parse((PACKAGE / "exercises" / "solutions.py").read_text(encoding="utf-8"))
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    (top / "convlab" / "exercises" / "solutions.py").write_text(_stub(names))
    top.chmod(0o755)
    for path in top.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return top


def _python_folders() -> tuple[list[str], list[str]]:
    """Where this Python's files are: (folders to bind read-only, convlab package folders
    inside them to cover with an empty tmpfs). A source checkout of convlab (a folder
    with the package beside ``pyproject.toml`` or ``notebooks``: the teacher's, with the
    solution notebooks and the tests) is not bound at all."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix,
                os.path.dirname(os.path.realpath(sys.executable))}
    found = prefixes | {sysconfig.get_path(k)
                        for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    # sys.path's other folders only where they hold installed packages: never the folder
    # the grader was started from (``python -m`` puts the working directory first), which
    # may be the teacher's course folder, beside the submissions and earlier grades
    roots = [os.path.realpath(r) for r in prefixes]
    found |= {p for p in sys.path if p and os.path.isdir(p) and (
        os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")
        or any(os.path.realpath(p).startswith(r.rstrip("/") + "/") for r in roots))}
    keep, hide = [], []
    for p in sorted(os.path.realpath(f) for f in found if f):
        if p == "/":
            continue
        if os.path.isdir(os.path.join(p, "convlab")):
            if any(os.path.exists(os.path.join(p, m)) for m in ("pyproject.toml", "notebooks",
                                                                 "setup.py", ".git")):
                continue  # a checkout: nothing of it is needed (/sandbox/pkg is convlab)
            hide.append(os.path.join(p, "convlab"))  # an installed convlab, solutions and all
        keep.append(p)
    return keep, hide


def config(jobdir: Path, argv: list[str], env: dict[str, str], limits: dict[str, int],
           sizes: dict[str, int]) -> dict[str, Any]:
    owner = STUDENT_UID if os.geteuid() == 0 else 0
    base = {k: os.environ[k] for k in ENV if k in os.environ}
    paths = [os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(
        sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]
    base.update({"HOME": HOME, "USER": "student", "TMPDIR": "/tmp", "PYTHONPATH": PKG,
                 "PATH": os.pathsep.join(dict.fromkeys(paths)),
                 "PYTHONDONTWRITEBYTECODE": "1", "MALLOC_ARENA_MAX": "2",
                 "NUMBA_CACHE_DIR": "/tmp/numba-cache", "MPLCONFIGDIR": "/tmp/matplotlib",
                 "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime"})
    base.update(env)
    folders, hide = _python_folders()
    return {"root": str(jobdir / "root"), "read_only": [*SYSTEM, *folders], "hide": hide,
            "extra_read_only": {PKG: str(package_copy()), JOB: str(jobdir / "job")},
            "work_src": str(jobdir / "work"), "home": HOME, "owner": owner,
            "work": WORK, "cwd": WORK, "argv": argv, "env": base, "limits": limits, **sizes}


def command(jobdir: Path, argv: list[str], env: dict[str, str], limits: dict[str, int],
            sizes: dict[str, int]) -> list[str]:
    """The command line that runs ``argv`` in a sandbox for ``jobdir`` (its ``work`` is
    copied in, its ``job`` is bound read-only)."""
    (jobdir / "root").mkdir()
    for path in (jobdir, jobdir / "root", jobdir / "job"):
        path.chmod(0o755)
    for path in (jobdir / "job").iterdir():
        path.chmod(0o644)
    cfg = jobdir / "sandbox.json"
    cfg.write_text(json.dumps(config(jobdir, argv, env, limits, sizes)))
    cfg.chmod(0o600)
    return [sys.executable, "-I", "-S", str(INIT), str(cfg)]


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why no sandbox can be built on this machine, in one line; None when it can."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return (f"the sandbox needs Linux on x86_64 (this is {sys.platform}, "
                f"{os.uname().machine})")
    with tempfile.TemporaryDirectory(prefix="convlab-sandbox-probe-") as tmp:
        jobdir = Path(tmp)
        (jobdir / "work").mkdir()
        (jobdir / "job").mkdir()
        argv = [os.path.realpath(sys.executable), "-I", "-S", "-c", "pass"]
        cmd = command(jobdir, argv, {}, {}, {"shm_bytes": 1 << 20, "tmp_bytes": 1 << 20,
                                             "home_bytes": 1 << 20, "work_bytes": 1 << 20})
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"could not start the sandbox: {err}"
        if proc.returncode != 0:
            why = [line for line in proc.stderr.splitlines() if line.strip()][-1:]
            return ("unprivileged Linux namespaces are not available here ("
                    + (why[0][:200] if why else f"exit status {proc.returncode}") + ")")
    return None
