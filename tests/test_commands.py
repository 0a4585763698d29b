"""Every shell command that the README and the notebooks show is run here.

The commands are read at collection time, so a command added to a notebook tomorrow is
tested tomorrow. They come from README.md, notebooks/README.md and notebooks/**/*.ipynb:

* fenced ``bash``/``sh``/``shell``/``console`` blocks: every line is a command (a trailing
  ``\\`` continues it, ``#`` starts a comment);
* ``$ ``-prefixed lines in any fenced block; the lines after one, up to the next ``$`` line
  or the end of the block, are the output it shows, and the command must print exactly that;
* inline code spans whose first word (after ``NAME=value`` settings) is a program below and
  that have at least one argument, e.g. ```convlab info```;
* in notebook code cells, ``!command`` lines and ``%%bash``/``%%sh`` cells.

A command is split at ``&&`` and ``;`` into simple commands, and each one must be handled by
this table. Anything else (another program, a pipe, an option a handler does not know) fails
the test: fix the command, or add a handler here that really checks it.

=======================================  =================================================
program                                  what the test does
=======================================  =================================================
``convlab ...``,                         parsed by ``convlab.cli.build_parser()``, then run in
``python -m convlab.cli ...``            a subprocess in the repository, bounded: ``bench``
                                         gets ``--layers seed --repeats 1 --no-progress``
                                         (``--device cuda``: the CUDA simulator and the toy
                                         layer ``tiny_3x3`` when there is no GPU) and loses
                                         ``--cold-cache``; ``figures`` without ``--from`` draws
                                         from the committed figures/bench.json; ``tune``
                                         measures the seed layer once (into the tests' private
                                         tuning memory); ``info --cuda-static`` without the
                                         CUDA toolchain must exit 2 saying how to get it (with
                                         it, tests/test_cuda_static.py runs the same report);
                                         every ``--out``/``--plot`` goes to a temporary folder;
                                         ``grade`` reads its submissions from the repository
                                         and runs in a temporary folder, where its relative
                                         ``--out`` lands (``--scheduler`` is not in the
                                         table); ``explore`` is started with ``--no-browser``
                                         on a free port, must serve its page (HTTP 200), and
                                         is stopped as Ctrl-C stops it. Exit status 0, and
                                         the shown output if any.
``pytest ...``, ``python -m pytest``     ``pytest --collect-only`` with the same arguments:
                                         it must collect tests without an error (the suite
                                         itself is what runs this file).
``python3 -m venv .venv``                accepted; ``. .venv/bin/activate`` only after it, in
                                         the same command (a command must not rely on an
                                         environment made by another one).
``pip install [-e] .[extras]``           only inside an activated venv (else it installs into
                                         whatever Python is first on PATH, or fails under PEP
                                         668); the extras must exist in pyproject.toml. The
                                         README's two commands are also run for real, in
                                         order, on a clean copy (the slow test at the end).
``jupyter lab [PATH]``                   not started (it serves until stopped): PATH must
                                         exist and an extra must install jupyterlab.
``jupyter nbconvert ... GLOBS``          not run (it rewrites the notebooks in place; the
                                         state it leaves is what test_notebooks checks):
                                         options must be known and every glob must match.
``NAME=value`` before a command          NUMBA_* (Numba's settings) or a CONVLAB_* name that
                                         the code reads.
=======================================  =================================================
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from convlab.cli import build_parser

from helpers import convlab_command

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["README.md", "notebooks/README.md", "notebooks/**/*.ipynb"]
PROGRAMS = {"convlab", "pip", "pip3", "python", "python3", "pytest", "jupyter", ".", "source"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console", "zsh"}
TIMEOUT_S = 600

# Commands known to be broken and being fixed elsewhere: strict, so the day one is fixed
# this test fails until its line here is removed.
KNOWN_BROKEN: dict[str, str] = {}


@dataclass(frozen=True)
class Shown:
    """A command as a reader sees it, and where."""

    where: str  # file:line, or notebook#cell (0-based, as issue reports count cells)
    text: str
    output: tuple[str, ...] | None = None  # what the page shows it printing, if it does


# ------------------------------------------------------------------ finding commands
def _logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(index of first line, line) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for i, line in enumerate(lines):
        if not pending:
            start = i
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        out.append((start, pending + (line.strip() if pending else line)))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _is_command(text: str) -> bool:
    try:
        words = shlex.split(text, comments=True)
    except ValueError:  # unbalanced quotes: a broken command if it starts like one
        words = text.split()
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]
    return len(words) >= 2 and words[0] in PROGRAMS


def commands_in_markdown(text: str, where: str, first_line: int = 1) -> list[Shown]:
    """The commands a markdown text shows (``where`` gets the line number appended when
    ``first_line`` is given, else is used as is)."""
    found: list[Shown] = []
    lines = text.splitlines()
    prose = list(lines)  # the text outside fenced blocks, line numbers kept
    i = 0

    def at(n: int) -> str:
        return f"{where}:{first_line + n}" if first_line else where

    while i < len(lines):
        fence = re.match(r"\s*(```+|~~~+)\s*([\w-]*)", lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
            end += 1
        body = lines[i + 1:end]
        for n in range(i, min(end + 1, len(lines))):
            prose[n] = ""
        lang = fence.group(2).lower()
        dollar = [k for k, line in enumerate(body) if line.startswith("$ ")]
        if dollar:
            for k in dollar:
                stop = next((d for d in dollar if d > k), len(body))
                found.append(Shown(at(i + 1 + k), body[k][2:].strip(),
                                   tuple(line.rstrip() for line in body[k + 1:stop])))
        elif lang in SHELL_BLOCKS:
            for k, line in _logical_lines(body):
                if line.strip() and not line.strip().startswith("#"):
                    found.append(Shown(at(i + 1 + k), line.strip()))
        i = end + 1
    flat = "\n".join(prose)
    for m in re.finditer(r"(?<!`)`([^`]+?)`(?!`)", flat, re.S):
        span = " ".join(m.group(1).split())
        if _is_command(span):
            found.append(Shown(at(flat.count("\n", 0, m.start())), span))
    return found


def commands_in_notebook(path: Path) -> list[Shown]:
    name = path.relative_to(REPO).as_posix()
    found: list[Shown] = []
    for n, cell in enumerate(json.loads(path.read_text())["cells"]):
        source = "".join(cell["source"])
        where = f"{name}#cell{n}"
        if cell["cell_type"] == "markdown":
            found += commands_in_markdown(source, where, first_line=0)
        elif cell["cell_type"] == "code":
            lines = source.splitlines()
            if lines and lines[0].strip() in ("%%bash", "%%sh"):
                found += [Shown(where, line.strip()) for _, line in _logical_lines(lines[1:])
                          if line.strip() and not line.strip().startswith("#")]
            else:
                found += [Shown(where, line.strip()[1:].strip())
                          for _, line in _logical_lines(lines) if line.strip().startswith("!")]
    return found


def all_commands() -> list[Shown]:
    found: list[Shown] = []
    for pattern in SOURCES:
        for name in sorted(glob.glob(pattern, root_dir=REPO, recursive=True)):
            path = REPO / name
            if ".ipynb_checkpoints" in path.parts:
                continue
            if path.suffix == ".ipynb":
                found += commands_in_notebook(path)
            else:
                found += commands_in_markdown(path.read_text(), name)
    return found


def unique(found: list[Shown]) -> list[Shown]:
    """One test per distinct command; its ``where`` lists every place that shows it."""
    places: dict[tuple, list[Shown]] = {}
    for shown in found:
        try:  # the same words, whatever the spacing or the comment after them
            words: tuple[str, ...] | str = tuple(shlex.split(shown.text, comments=True))
        except ValueError:
            words = shown.text
        places.setdefault((words, shown.output), []).append(shown)
    return [Shown(", ".join(s.where for s in same), same[0].text, same[0].output)
            for same in places.values()]


COMMANDS = unique(all_commands())


def readme_two_commands() -> tuple[str, str]:
    """The README's "two commands on a fresh machine": its first two bash blocks."""
    shown = [c for c in commands_in_markdown((REPO / "README.md").read_text(), "README.md")
             if c.output is None]
    return shown[0].text, shown[1].text


# ------------------------------------------------------------------ running them
@dataclass
class Context:
    tmp: Path
    venv_made: bool = False
    venv_active: bool = False
    log: list[str] = field(default_factory=list)


def _split(text: str) -> list[list[str]]:
    """Simple commands, split at && and ;. A pipe or a redirection is not in the table."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split, lex.commenters = True, "#"
    simple: list[list[str]] = [[]]
    for token in lex:
        if token in ("&&", ";"):
            simple.append([])
        elif token and set(token) <= set("();<>|&"):
            pytest.fail(f"{token!r} in a shown command: not in the table of tests/test_commands.py")
        else:
            simple[-1].append(token)
    return [words for words in simple if words]


def _env_settings(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, _, value = words[0].partition("=")
        if not name.startswith("NUMBA_"):
            read = [p for p in [*REPO.glob("convlab/**/*.py"), *REPO.glob("notebooks/**/*.ipynb")]
                    if name in p.read_text()]
            assert name.startswith("CONVLAB_") and read, (
                f"{name}=... : convlab reads no such setting")
        env[name] = value
        words = words[1:]
    return env, words


def _extras() -> set[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed metadata says the same
        from importlib import metadata

        return set(metadata.metadata("convlab").get_all("Provides-Extra") or [])
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(data["project"].get("optional-dependencies", {}))


def _extra_installing(package: str) -> str | None:
    try:
        import tomllib
    except ImportError:
        return "notebooks"  # Python 3.10: trust pyproject.toml
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    return next((name for name, reqs in extras.items()
                 if any(re.match(rf"{package}\b", r) for r in reqs)), None)


def _run(argv: list[str], env: dict[str, str], timeout: int = TIMEOUT_S, cwd: Path = REPO):
    full_env = dict(os.environ, **env)
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def _explore(run: list[str], env: dict[str, str], ctx: Context) -> None:
    """Serve the explorer, fetch its page, stop it as Ctrl-C does (by its pid)."""
    import signal
    import urllib.request

    from convlab.explore import free_port

    port = free_port()
    run = _without(_without(run, "--port"), "--no-browser", takes_value=False)
    run += ["--no-browser", "--port", str(port)]
    log = ctx.tmp / "explore.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(convlab_command(*run), cwd=ctx.tmp,
                                env=dict(os.environ, **env), stdout=out,
                                stderr=subprocess.STDOUT)
    ctx.log.append(f"convlab {' '.join(run)}")
    try:
        served, deadline = False, time.monotonic() + 120
        while not served and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    served = r.status == 200
            except OSError:
                time.sleep(0.5)
        assert served, (f"`convlab {' '.join(run)}` served no page in 120 s:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (f"`convlab {' '.join(run)}` exited {proc.returncode} "
                                  f"when stopped:\n{log.read_text(errors='replace')[-3000:]}")


def _option(argv: list[str], name: str) -> str | None:
    for k, word in enumerate(argv):
        if word == name and k + 1 < len(argv):
            return argv[k + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _without(argv: list[str], name: str, takes_value: bool = True) -> list[str]:
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == name:
            skip = takes_value
        elif not word.startswith(name + "="):
            out.append(word)
    return out


def _convlab(argv: list[str], env: dict[str, str], ctx: Context, shown: Shown) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`convlab {' '.join(argv)}` does not parse: run it to see the message")
    run = list(argv)
    if args.command == "bench":
        cuda = args.device == "cuda"
        run = _without(_without(run, "--layers"), "--repeats")
        run = _without(_without(run, "--cold-cache", takes_value=False), "--no-progress",
                       takes_value=False)
        if args.model is not None:  # whole networks: their tiny versions, one pass
            run = _without(_without(run, "--passes"), "--quick", takes_value=False)
            run += ["--quick", "--passes", "1", "--no-progress"]
        else:
            run += ["--layers", "tiny_3x3" if cuda else "seed", "--repeats", "1",
                    "--no-progress"]
        if cuda and not _has_gpu():
            env = dict(env, NUMBA_ENABLE_CUDASIM="1")
        for name in ("--out", "--plot"):
            if _option(run, name) is not None:
                run = _without(run, name) + [name, str(ctx.tmp / Path(_option(run, name)).name)]
    elif args.command == "figures":
        if args.source is None:
            run += ["--from", "figures/bench.json"]
        run = _without(run, "--out") + ["--out", str(ctx.tmp / "figures")]
    elif args.command == "info" and args.cuda_static:
        from convlab.cuda_static import toolchain_missing

        if toolchain_missing() is None:  # compiling every variant takes a minute or more:
            return  # tests/test_cuda_static.py runs the same report and checks its numbers
        proc = _run([sys.executable, "-m", "convlab.cli", *run], env)
        assert proc.returncode == 2 and "pip install 'convlab[cuda]'" in proc.stderr, (
            "without the CUDA toolchain `convlab info --cuda-static` must say, in one line, "
            f"how to get it:\n{proc.stderr}")
        return
    elif args.command == "tune" and not (args.show or args.clear):
        run = _without(_without(_without(run, "--layers"), "--repeats"), "--suite")
        run += ["--layers", "seed", "--repeats", "1", "--no-progress"]
    elif args.command == "release":
        if not args.check:
            run = _without(run, "--out") + ["--out", str(ctx.tmp / "release")]
    elif args.command == "explore":
        _explore(run, env, ctx)
        return
    cwd = REPO
    if args.command == "grade":
        assert args.scheduler is None, "convlab grade --scheduler: not in the table"
        assert not Path(args.out).is_absolute(), "convlab grade --out: give a relative path"
        run = [str(REPO / w) if w in args.submissions else w for w in run]
        cwd = ctx.tmp
    proc = _run([sys.executable, "-m", "convlab.cli", *run], env, cwd=cwd)
    ctx.log.append(f"convlab {' '.join(run)}")
    assert proc.returncode == 0, (f"`convlab {' '.join(run)}` exited {proc.returncode}:\n"
                                  f"{proc.stderr[-3000:]}")
    if shown.output is not None:
        assert [line.rstrip() for line in proc.stdout.splitlines()] == list(shown.output), (
            f"{shown.where} shows an output that `convlab {' '.join(argv)}` does not print:"
            f"\n{proc.stdout}")


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and _run(["nvidia-smi", "-L"], {}).returncode == 0


_COLLECTED: dict[tuple[str, ...], str] = {}


def _pytest(argv: list[str], env: dict[str, str], ctx: Context) -> None:
    key = tuple(argv)
    if key not in _COLLECTED:
        proc = _run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                     "no:cacheprovider", *argv], env)
        assert proc.returncode == 0, f"`pytest {' '.join(argv)}` collects with errors:\n" + (
            proc.stdout[-3000:])
        _COLLECTED[key] = proc.stdout
    assert re.search(r"\d+(/\d+)? tests? collected", _COLLECTED[key]), _COLLECTED[key][-500:]


def _pip(argv: list[str], ctx: Context) -> None:
    assert ctx.venv_active, (
        "`pip install` with no virtual environment activated in the same command installs "
        "into whatever Python is first on PATH (or fails under PEP 668): start the command "
        "with `python3 -m venv .venv && . .venv/bin/activate && `")
    assert argv[:1] == ["install"], f"pip {argv[:1]}: only `pip install` is in the table"
    targets = [w for w in argv[1:] if w not in ("-e", "--editable", "-q", "--quiet", "-U",
                                                "--upgrade")]
    assert len(targets) == 1, f"pip install {targets}: expected one local target"
    m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", targets[0])
    assert m, (f"pip install {targets[0]}: only this checkout ('.' or '.[extras]') is in the "
               "table")
    missing = set((m.group(1) or "").split(",")) - {""} - _extras()
    assert not missing, f"pip install {targets[0]}: pyproject.toml has no extra {missing}"


def _jupyter(argv: list[str]) -> None:
    assert argv, "jupyter with no subcommand"
    if argv[0] == "lab":
        for path in argv[1:]:
            assert not path.startswith("-"), f"jupyter lab {path}: option not in the table"
            assert (REPO / path).exists(), f"jupyter lab {path}: no such path"
        assert _extra_installing("jupyterlab"), "no extra of pyproject.toml installs jupyterlab"
    elif argv[0] == "nbconvert":
        known = {"--clear-output", "--inplace"}
        options = {w for w in argv[1:] if w.startswith("-")}
        assert options <= known, f"jupyter nbconvert {options - known}: not in the table"
        for pattern in (w for w in argv[1:] if not w.startswith("-")):
            assert glob.glob(pattern, root_dir=REPO), f"{pattern} matches no file"
    else:
        pytest.fail(f"jupyter {argv[0]}: not in the table of tests/test_commands.py")


def run_shown(shown: Shown, ctx: Context) -> None:
    for words in _split(shown.text):
        env, words = _env_settings(words)
        program, argv = words[0], words[1:]
        if program in ("python", "python3") and argv[:2] == ["-m", "convlab.cli"]:
            program, argv = "convlab", argv[2:]
        if program in ("python", "python3") and argv[:2] == ["-m", "pytest"]:
            program, argv = "pytest", argv[2:]
        if program in ("python", "python3") and argv[:2] == ["-m", "venv"]:
            assert argv[2:] == [".venv"], f"venv {argv[2:]}: the commands use .venv"
            ctx.venv_made = True
        elif program in (".", "source"):
            assert argv == [".venv/bin/activate"], f"activating {argv}: not in the table"
            assert ctx.venv_made, ("activates .venv without making it first in the same "
                                   "command: start with `python3 -m venv .venv && `")
            ctx.venv_active = True
        elif program == "convlab":
            _convlab(argv, env, ctx, shown)
        elif program == "pytest":
            _pytest(argv, env, ctx)
        elif program in ("pip", "pip3"):
            _pip(argv, ctx)
        elif program == "jupyter":
            _jupyter(argv)
        else:
            pytest.fail(f"`{' '.join(words)}`: program {program!r} is not in the table of "
                        "tests/test_commands.py; fix the command or add a handler")


def _param(shown: Shown):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BROKEN[shown.text])] if (
        shown.text in KNOWN_BROKEN) else []
    return pytest.param(shown, marks=marks,
                        id=f"{shown.where.split(', ')[0]} {' '.join(shown.text.split())[:60]}")


def test_commands_were_found():
    """The finder works: the README's and the notebooks' commands are all here."""
    texts = [c.text for c in COMMANDS]
    first, second = readme_two_commands()
    assert first in texts and second in texts
    assert any(c.where.startswith("notebooks/README.md") for c in COMMANDS)
    assert any(".ipynb#cell" in c.where for c in COMMANDS)
    assert any(c.output for c in COMMANDS)  # the README's `$ convlab shape` block


@pytest.mark.parametrize("shown", [_param(c) for c in COMMANDS])
def test_shown_command_works(shown: Shown, tmp_path: Path) -> None:
    run_shown(shown, Context(tmp_path))


def test_finder_and_table_reject_what_they_should(tmp_path: Path) -> None:
    """The table fails what it cannot vouch for (so a new broken command fails CI)."""
    md = ("Run `convlab bench --kernels a b` or `convlab info`; not `convlab.conv2d(x)`.\n\n"
          "```bash\npip install -e \".[test]\"  # a comment\nconvlab shape \\\n  --input 1,2,3\n"
          "```\n\n```text\n$ convlab info\nsome output\n```\n")
    found = commands_in_markdown(md, "x.md")
    assert [(c.where, c.text, c.output) for c in found] == [
        ("x.md:4", 'pip install -e ".[test]"  # a comment', None),
        ("x.md:5", "convlab shape --input 1,2,3", None),
        ("x.md:10", "convlab info", ("some output",)),
        ("x.md:1", "convlab bench --kernels a b", None),
        ("x.md:1", "convlab info", None)]
    bad = {
        "convlab bench --kernels parallel im2col": "does not parse",
        'pip install -e ".[test]"': "no virtual environment",
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[nope]"':
            "no extra",
        "python3 -m venv .venv && . .venv/bin/activate && pip install convlab": "only this",
        ". .venv/bin/activate && convlab info": "without making it",
        "jupyter lab no_such_folder/": "no such path",
        "CONVLAB_NO_SUCH=1 convlab info": "reads no such setting",
        "make all": "not in the table",
        "convlab info | head": "not in the table",
    }
    for text, words in bad.items():
        with pytest.raises((AssertionError, pytest.fail.Exception)) as info:
            run_shown(Shown("x.md:1", text), Context(tmp_path))
        assert words in str(info.value), (text, str(info.value))
    with pytest.raises(AssertionError, match="does not print"):
        run_shown(Shown("x.md:1", "convlab shape --input 1,2,5,5 --out-channels 1 "
                        "--kernel-size 3", ("output           (1, 1, 3, 4)",)),
                  Context(tmp_path))


def test_ci_runs_exactly_the_readme_test_command():
    _, second = readme_two_commands()
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == second


# ------------------------------------------------------------------ the README in order
def _clean_copy(dest: Path) -> None:
    """This checkout's files as a fresh clone would have them (tracked and new files, not
    ignored ones such as .venv or __pycache__), so uncommitted README edits are tested."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): skip the usual
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".ci-venv", "venv", "__pycache__", "*.egg-info", "build", "dist",
            ".pytest_cache", ".hypothesis", ".ruff_cache", ".ipynb_checkpoints"))
        return
    for name in listed.stdout.decode().split("\0"):
        src = REPO / name
        if name and src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _shell_env() -> dict[str, str]:
    """A new terminal's environment: no virtual environment active, none of this test
    run's Python settings, and pip forbidden to touch a Python outside a venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "NUMBA_CACHE_DIR")
           and not k.startswith("PYTEST")}
    venvs = {str(Path(sys.prefix) / "bin")} | (
        {str(Path(os.environ["VIRTUAL_ENV"]) / "bin")} if "VIRTUAL_ENV" in os.environ else set())
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in venvs)
    env["PIP_REQUIRE_VIRTUALENV"] = "1"
    return env


@pytest.mark.slow
def test_readme_two_commands_in_order_on_a_clean_copy(tmp_path: Path) -> None:
    """The README's two commands pasted one after the other into one terminal, on a clean
    copy of the repository: they used to break the install (the first one's benchmark left
    Numba's cache in site-packages/convlab, which became a namespace package hiding the
    second one's editable install, and every test failed at collection).

    Bounded: the benchmark runs the naive kernel on the seed layer once, and ``pytest``
    collects the suite (that is where the broken install showed).
    """
    first, second = readme_two_commands()
    bench = re.search(r"convlab bench[^&;]*", first)
    assert bench and second.endswith("&& pytest"), (first, second)
    first = first.replace(bench.group(0), bench.group(0).rstrip()
                          + " --layers seed --kernels naive --repeats 1 --no-progress")
    second = second[:-len("pytest")] + "pytest --collect-only -q -p no:cacheprovider"
    clone = tmp_path / "convlab"
    _clean_copy(clone)
    script = f"{first} || exit 11\n{second} || exit 12\n"
    proc = subprocess.run(["bash", "-c", script], cwd=clone, env=_shell_env(),
                          capture_output=True, text=True, timeout=1800)
    err = "\n".join(line for line in proc.stderr.splitlines()
                    if not line.startswith("WARNING: Location"))  # pip's noise on local indexes
    out = f"--- stdout (end) ---\n{proc.stdout[-4000:]}\n--- stderr (end) ---\n{err[-2000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode} (11: first command, 12: second)\n{out}"
    assert re.search(r"\d+ tests collected", proc.stdout) and " error" not in proc.stdout, out
    assert (clone / "r.json").exists() and (clone / "r.png").exists()
    stray = list((clone / ".venv").glob("lib/python*/site-packages/convlab"))
    assert not stray, f"a convlab folder in site-packages: {stray}"
