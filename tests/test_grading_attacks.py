"""convlab grade against students who want a grade without the work (issue 25).

One planted hostile submission per attack class, graded with ``--jobs 2`` beside an
honest class (right, one known mistake, untouched), in a sandbox per notebook. Several
attacks share a notebook where they do not interfere (the two exercises of
notebooks/exercises/01_shapes.ipynb each take one cell). Each attack must fail to change
a grade, to read or write outside its copy, or to outlive the run; the honest rows must
be the same as those of a run without the attackers.

| attack                                       | student, cell                |
|----------------------------------------------|------------------------------|
| forged outcome and probe lines               | forger, output_size          |
| monkeypatched check, oracle, np.allclose     | forger, both                 |
| int subclass whose != is always False        | cheater, output_size         |
| solution(show=False)                         | cheater, same_padding        |
| the public check's cases hard-coded          | hardcoder, both              |
| reading env, ~/.netrc, solutions, classmates | snoop, output_size           |
| writing classmates', teacher's, grades, rc   | vandal, same_padding         |
| IPython startup file in the home             | vandal, same_padding         |
| setsid daemon rewriting grades.csv           | daemon, output_size          |
| fake kernel.pid (file and pipe line)         | daemon, output_size          |
| fork bomb                                    | hog, output_size             |
| disk fill, /dev/shm fill, shared mmap, net   | hog, same_padding            |
| SIGKILL / SIGSTOP of every visible process   | killer, same_padding         |
| umount / remount rw, in a nested namespace   | killer, output_size          |
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_grading import PLANTED, RIGHT_SAME, RIGHT_SIZE, plant

from convlab.exercises.arithmetic import OUTPUT_SIZE_CASES, SAME_CASES, _random_output_cases

pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
HONEST = ["correct", "wrong_d", "untouched"]
MARKER = "convlab-attack-daemon-7f3a"
SECRET = "teacher-secret-5b1c"


def _size(size, k, s, p, d):  # the test's own formula, for the hard-coded table
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _attacks(t: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """student: (output_size cell, same_padding cell, how submitted); ``t`` holds the
    teacher-side paths and numbers the attacks aim at."""
    public = OUTPUT_SIZE_CASES + _random_output_cases(10)
    table = {c: _size(*c) for c in public}
    same = {(k, d): (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in SAME_CASES}
    forge = """import json, os
import numpy as np
from convlab import exercises as ex
from convlab.exercises import core
from convlab import shapes
out = os.environ.get("CONVLAB_OUTCOMES", "/tmp/x")
def output_size(size, kernel, stride, padding, dilation):
    return size
def forged(fn, name="output_size"):
    with open(out, "a") as f:
        f.write(json.dumps({"exercise": name, "result": "correct",
                             "message": f"Correct ({name}): forged"}) + "\\n")
        f.write(json.dumps({"probe": name, "status": "answered", "answers": []}) + "\\n")
        f.write(json.dumps({"event": "finished"}) + "\\n")
ex.output_size.check = forged
core.record_outcome = lambda *a: None
np.allclose = lambda *a, **k: True
"""
    oracle = """from convlab import shapes
shapes.ConvArgs.explicit_padding = lambda self: (0, 0, 0, 0)
def same_padding(kernel, dilation):
    return (0, 0)
"""
    sneaky = """class Sneaky(int):
    def __ne__(self, other):
        return False
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def output_size(size, kernel, stride, padding, dilation):
    return Sneaky(0)
"""
    borrow = """from convlab import exercises as ex
same_padding = ex.same_padding.solution(show=False)
"""
    hard_size = f"TABLE = {table!r}\ndef output_size(*args):\n    return TABLE.get(args, 1)\n"
    hard_same = f"TABLE = {same!r}\ndef same_padding(*args):\n    return TABLE.get(args, (0, 0))\n"
    snoop = f"""import os
found = [os.environ.get("CONVLAB_TEACHER_SECRET", "no-env")]
for p in {[t["netrc"], t["solution"], t["classmate"], t["grades"], t["source"],
           "/proc/1/environ"]!r}:
    try:
        found.append(open(p, errors="replace").read()[:300])
    except OSError as e:
        found.append(type(e).__name__)
found.append(str(sorted(os.listdir(os.path.expanduser("~")))))
raise RuntimeError("LEAK " + repr(found))
"""
    vandal = f"""import os
written = []
for p in {[t["classmate"], t["source"], t["grades"], t["bashrc"]]!r}:
    try:
        with open(p, "a") as f:
            f.write("# vandal was here\\n")
        written.append(p)
    except OSError:
        pass
startup = "import convlab.exercises as ex\\nex.same_padding.check = lambda fn: None\\n"
for home in (os.path.expanduser("~"), {t["home"]!r}):
    d = os.path.join(home, ".ipython", "profile_default", "startup")
    try:
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "00-vandal.py"), "w").write(startup)
    except OSError:
        pass
assert not written, written
""" + RIGHT_SAME
    loop = (f"import time\nwhile True:\n    try:\n        open({t['grades']!r}, 'w')"
            f".write('x')\n    except OSError:\n        pass\n    time.sleep(0.2)  # {MARKER}")
    daemon = f"""import os, subprocess, sys, json
code = {loop!r}
subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open("kernel.pid", "w").write("{t['victim']}")
for fd in os.listdir("/proc/1/fd"):
    try:
        with open(f"/proc/1/fd/{{fd}}", "w") as f:
            f.write(json.dumps({{"event": "kernel", "pid": {t['victim']}}}) + "\\n")
    except OSError:
        pass
""" + RIGHT_SIZE
    bomb = """import os, time
pids = []
try:
    for _ in range(600):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
except OSError:
    pass
for pid in pids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
raise RuntimeError(f"FORKED {len(pids)}")
"""
    fill = f"""import mmap, os, socket
def fill(folder):
    n = 0
    try:
        for i in range(4096):
            with open(os.path.join(folder, f"fill{{i}}"), "wb") as f:
                f.write(b"x" * (1 << 20))
            n += 1
    except OSError:
        pass
    for i in range(n):
        os.remove(os.path.join(folder, f"fill{{i}}"))
    return n
disk, shm = fill("."), fill("/dev/shm")
try:
    m = mmap.mmap(-1, 5 << 29, flags=mmap.MAP_SHARED)
    m[::4096] = b"x" * len(m[::4096])
    mapped = "yes"
except (OSError, MemoryError, ValueError) as e:
    mapped = type(e).__name__
try:
    socket.create_connection(("127.0.0.1", {t['port']}), timeout=3).close()
    net = "connected"
except OSError as e:
    net = type(e).__name__
raise RuntimeError(f"FILLED disk={{disk}} shm={{shm}} mmap={{mapped}} net={{net}}")
"""
    killer = """import os, signal
me = os.getpid()
for name in os.listdir("/proc"):
    if name.isdigit() and int(name) != me:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                os.kill(int(name), sig)
            except OSError:
                pass
""" + RIGHT_SAME
    escape = """import subprocess, sys
script = ("umount -l /home/student; umount -l /sandbox/pkg; mount -o remount,rw,bind "
          f"{sys.prefix}; touch {sys.prefix}/ESCAPED")
for cmd in (["sh", "-c", script], ["unshare", "-Urm", "sh", "-c", script]):
    subprocess.run(cmd, capture_output=True)
import os
assert not os.path.exists(f"{sys.prefix}/ESCAPED")
assert not os.path.exists("/sandbox/pkg/convlab/exercises/solutions.py") or \
    "not available" in open("/sandbox/pkg/convlab/exercises/solutions.py").read()
""" + RIGHT_SIZE
    return {"forger": (forge, oracle, "file"), "cheater": (sneaky, borrow, "file"),
            "hardcoder": (hard_size, hard_same, "folder"), "snoop": (snoop, RIGHT_SAME, "file"),
            "vandal": (RIGHT_SIZE, vandal, "folder"), "daemon": (daemon, RIGHT_SAME, "file"),
            "hog": (bomb, fill, "file"), "killer": (escape, killer, "folder")}


def _processes_with(text: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and text.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
        except OSError:
            pass
    return found


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    from convlab.grading.sandbox import unavailable

    why = unavailable()
    if why:
        pytest.skip(f"no sandbox here: {why}")
    tmp = tmp_path_factory.mktemp("attacks")
    home, results, teacher = tmp / "home", tmp / "results", tmp / "teacher"
    for d in (home, results, teacher):
        d.mkdir()
    (home / ".netrc").write_text(f"machine example.org login t password {SECRET}\n")
    (home / ".bashrc").write_text("# the teacher's\n")
    (teacher / "source.py").write_text(f"SECRET = {SECRET!r}\n")
    grades = results / "grades.csv"
    (results / "old_grades.csv").write_text(f"student,secret\nx,{SECRET}\n")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    honest = plant(tmp / "honest", {s: PLANTED[s] for s in HONEST})
    klass = plant(tmp / "class", {s: PLANTED[s] for s in HONEST})
    targets = {"netrc": str(home / ".netrc"), "bashrc": str(home / ".bashrc"),
               "home": str(home), "source": str(teacher / "source.py"),
               "solution": str(REPO / "notebooks/exercises/source/01_shapes.ipynb"),
               "classmate": str(klass / "correct" / "01_shapes.ipynb"),
               "grades": str(results / "old_grades.csv"), "victim": str(victim.pid),
               "port": str(listener.getsockname()[1])}
    plant(klass, _attacks(targets))
    before = {p: p.read_bytes() for p in [*home.iterdir(), *teacher.iterdir(),
                                          *results.iterdir(), *klass.rglob("*.ipynb")]}
    env = {**os.environ, "HOME": str(home), "CONVLAB_TEACHER_SECRET": SECRET}
    common = ["--timeout", "60", "--disk", "48MiB", "--no-progress"]
    procs = {}
    for name, folder, jobs in (("honest", honest, "1"), ("class", klass, "2")):
        out = results / f"{name}.csv"
        procs[name] = subprocess.run(
            [sys.executable, "-m", "convlab.cli", "grade", str(folder), "--out", str(out),
             "--jobs", jobs, *common], capture_output=True, text=True, cwd=tmp, env=env,
            timeout=900)
        assert procs[name].returncode == 0, procs[name].stderr[-3000:]
    time.sleep(1.0)  # a daemon, were it alive, would have rewritten old_grades.csv by now
    listener.close()
    yield {"rows": _rows(results / "class.csv"), "honest": _rows(results / "honest.csv"),
           "before": before, "accepted": accepted, "victim": victim, "results": results,
           "grades": grades, "home": home}
    victim.kill()
    victim.wait()


def _row(attacked, student, exercise):
    return next(r for r in attacked["rows"] if (r["student"], r["exercise"]) ==
                (student, exercise))


def test_honest_rows_are_the_same_as_without_attackers(attacked):
    honest = [r for r in attacked["rows"] if r["student"] in HONEST]
    assert honest == attacked["honest"]
    assert [r["result"] for r in honest] == ["correct", "correct", "not attempted",
                                            "not attempted", "incorrect", "correct"]


def test_forged_verdicts_and_patched_checks_do_not_count(attacked):
    for exercise in ("output_size", "same_padding"):
        row = _row(attacked, "forger", exercise)
        assert row["result"] == "incorrect", row
        assert "a case drawn at grading time" in row["message"], row


def test_int_subclass_and_solution_do_not_count(attacked):
    sneaky = _row(attacked, "cheater", "output_size")
    assert sneaky["result"] == "incorrect" and "expected an int, got a value of type Sneaky" in \
        sneaky["message"], sneaky
    borrowed = _row(attacked, "cheater", "same_padding")
    assert borrowed["result"] == "incorrect", borrowed
    assert "solution() is not available" in borrowed["message"], borrowed


def test_hard_coded_public_cases_do_not_count(attacked):
    for exercise in ("output_size", "same_padding"):
        row = _row(attacked, "hardcoder", exercise)
        assert row["result"] == "incorrect", row
        assert "a case drawn at grading time" in row["message"], row


def test_nothing_outside_the_copy_can_be_read(attacked):
    leak = _row(attacked, "snoop", "output_size")
    assert leak["result"] == "error" and "LEAK" in leak["message"], leak
    assert "no-env" in leak["message"] and leak["message"].count("FileNotFoundError") == 5
    assert _row(attacked, "snoop", "same_padding")["result"] == "correct"
    everything = "".join(p.read_text(errors="replace") for p in attacked["results"].rglob("*")
                         if p.is_file() and p.name != "old_grades.csv")  # what grading wrote
    assert SECRET not in everything and "BEGIN SOLUTION" not in everything


def test_nothing_outside_the_copy_can_be_written(attacked):
    row = _row(attacked, "vandal", "same_padding")
    assert row["result"] == "correct", row  # its assertion: none of its writes got through
    assert _row(attacked, "vandal", "output_size")["result"] == "correct"
    for path, data in attacked["before"].items():
        assert path.read_bytes() == data, path
    assert not (attacked["home"] / ".ipython").exists()


def test_nothing_outlives_the_run_and_the_grader_is_out_of_reach(attacked):
    assert _processes_with(MARKER) == []
    assert attacked["victim"].poll() is None, "the fake kernel.pid got a process killed"
    assert _row(attacked, "daemon", "output_size")["result"] == "correct"
    killer = _row(attacked, "killer", "same_padding")
    assert killer["result"] == "correct", killer  # it cannot see the grader or its worker
    assert _row(attacked, "killer", "output_size")["result"] == "correct"  # no escape
    assert not (Path(sys.prefix) / "ESCAPED").exists()


def test_limits_hold(attacked):
    bomb = _row(attacked, "hog", "output_size")
    forked = int(bomb["message"].split("FORKED ")[1].split()[0])
    assert 0 < forked < 256, bomb
    fill = _row(attacked, "hog", "same_padding")["message"]
    stats = dict(kv.split("=") for kv in fill.split("FILLED ")[1].split("[")[0].split())
    assert int(stats["disk"]) <= 48 and int(stats["shm"]) <= 64, fill
    assert stats["mmap"] != "yes" and stats["net"] != "connected", fill
    assert attacked["accepted"] == []


def test_refuses_without_namespaces_unless_asked(tmp_path, monkeypatch):
    from convlab import grading
    from convlab.grading import sandbox

    klass = plant(tmp_path / "class", {"correct": PLANTED["correct"]})
    monkeypatch.setattr(sandbox, "unavailable", lambda: "no user namespaces (planted)")
    with pytest.raises(grading.NoSandbox, match="no user namespaces .planted.*--no-sandbox"):
        grading.grade([klass])


def test_outcome_lines_alone_never_make_a_verdict():
    """The trusted side decides from answers; a forged verdict line only lends text."""
    from convlab.grading.answers import draw_cases, encode_cases
    from convlab.grading.run import decide

    cases = draw_cases(["output_size"], seed=5)["output_size"]
    forged = {"exercise": "output_size", "result": "correct",
              "message": "Correct (output_size): forged"}
    assert decide("output_size", cases, None, forged)[0] == "error"
    wrong = {"probe": "output_size", "status": "answered",
             "answers": [{"t": "int", "v": 0}] * len(cases)}
    assert decide("output_size", cases, wrong, forged)[0] == "incorrect"
    right = {"probe": "output_size", "status": "answered",
             "answers": [{"t": "int", "v": _size(*c)} for c in cases]}
    assert decide("output_size", cases, right, forged) == ("correct", forged["message"])
    floats = {**right, "answers": [{"t": "float", "v": repr(float(_size(*c)))}
                                   for c in cases]}
    assert decide("output_size", cases, floats, None)[0] == "incorrect"
    assert json.loads(json.dumps(encode_cases({"output_size": cases})))  # plain JSON


@pytest.mark.slow
def test_a_lost_dask_worker_is_that_students_error_row(tmp_path):
    """Without a sandbox a notebook can kill the Dask worker grading it: that notebook
    gets an error row naming the cause, the others are graded."""
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not "
                                      "installed (pip install -e '.[grade]')")
    import dask

    from convlab.grading import Limits, grade

    kill = ("import os\nworker = int(open(f'/proc/{os.getppid()}/stat').read().split()[3])\n"
            "os.kill(worker, 9)\n" + RIGHT_SIZE)
    klass = plant(tmp_path / "class", {"correct": PLANTED["correct"],
                                       "assassin": (kill, RIGHT_SAME, "file")})
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None) as cluster:
        rows = grade([klass], limits=Limits(timeout_s=60), scheduler=cluster.scheduler_address,
                     sandbox=False)
    lost = [r for r in rows if r.student == "assassin" and not r.exercise]
    assert len(lost) == 1 and lost[0].result == "error", rows
    assert "the Dask worker running it died" in lost[0].message, lost
    assert "TCP" not in lost[0].message and "encryption" not in lost[0].message
    assert [r.result for r in rows if r.student == "correct"] == ["correct", "correct"]


def test_the_wire_carries_plain_data_only():
    """Pickles, subclasses and malformed tags never reach the grader as values."""
    import base64
    import io

    import numpy as np

    from convlab.grading import wire

    class Sneaky(int):
        pass

    assert wire.encode(Sneaky(3)) == {"t": "other", "type": "Sneaky"}
    assert wire.encode(np.int64(3)) == {"t": "int", "v": 3}
    arr = np.arange(6.0).reshape(2, 3)
    back = wire.decode(wire.encode(arr))
    assert type(back) is np.ndarray and back.dtype == np.float64 and (back == arr).all()
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    pickled = {"t": "array", "npy": base64.b64encode(buf.getvalue()).decode()}
    for bad in (pickled, {"t": "int", "v": True}, {"t": "int", "v": "3"}, {"t": "seq"},
                ["t", "int"], {"t": "float", "v": "1" * 50}):
        with pytest.raises(wire.WireError):
            wire.decode(bad)


def test_event_lines_are_one_schema_and_hostile_lines_are_dropped():
    """Worker, check, probe and grader share the line classes of ``wire``; a line the
    kernel wrote that is no event (or one the grader once crashed on: a cell of Infinity,
    JSON nested a million deep) is dropped, never raised on."""
    from convlab.grading import wire

    events = [wire.KernelStarted(4242), wire.CellEvent(3, "start"),
              wire.Outcome("output_size", "correct", "Correct (output_size): ok"),
              wire.Probe("output_size", "answered", [{"t": "int", "v": 2}]),
              wire.Probe("output_size", "raised", [], ("ValueError", "no")),
              wire.CellEvent(3, "end", ("NameError", "x")), wire.CellEvent(3, "end"),
              wire.CellEvent(5, "died"), wire.Finished()]
    lines = [json.dumps(e.line()).encode() for e in events]
    assert wire.parse_lines(lines) == events
    hostile = [b"[" * 1_000_000 + b"]" * 1_000_000, b'{"cell": Infinity, "event": "start"}',
               b'{"cell": "3", "event": "end"}', b'{"cell": 3, "event": "finish"}',
               b'{"cell": true, "event": "start"}', b'{"event": "kernel", "pid": "1"}',
               b'{"exercise": "output_size", "result": "excellent"}', b"[1, 2]", b"\xff\xfe",
               b'{"probe": 7, "answers": []}', b"not json"]
    assert wire.parse_lines(hostile) == []
    odd = wire.parse_event({"probe": "same_padding", "status": 1, "answers": "all right",
                            "error": ["E", 2]})
    assert odd == wire.Probe("same_padding", "", None, None)  # judged "malformed"


def test_hostile_lines_never_crash_the_verdicts():
    """The grader turns any pipe content into one row per check cell."""
    from convlab.exercises.cells import check_metadata
    from convlab.grading import run, wire

    cells = [{"cell_type": "code", "source": "x = 1", "metadata": {}},
             {"cell_type": "code", "source": "ex.output_size.check(output_size)",
              "metadata": check_metadata("output_size", "output_size")}]
    task = run.Task("s", "n.ipynb", {})
    lines = [b'{"cell": Infinity, "event": "start"}', b"[" * 100_000,
             json.dumps(wire.CellEvent(1, "start").line()).encode(),
             b'{"exercise": "output_size", "result": "correct", "message": "Correct ('
             b'output_size): forged"}',
             json.dumps(wire.CellEvent(1, "end").line()).encode()]
    rows = run.verdicts(task, cells, wire.parse_lines(lines), None, {"output_size": []})
    assert [(r.exercise, r.result) for r in rows] == [("output_size", "error")]
    assert "no answers to this run's cases" in rows[0].message  # the forged line: no grade
