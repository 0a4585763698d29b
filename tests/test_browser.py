"""The widgets in a real browser: notebook 02 in JupyterLab, and ``convlab explore``.

ipywidgets draw only in a front end, so the other tests call the widgets' Python side.
Here headless Chromium (Debian's, driven by Playwright) opens notebook 02 in JupyterLab,
runs every cell, moves the explorer's kernel and stride sliders with the keyboard, and
after each move reads what the page shows: the printed output shape, and the picture
itself, decoded from the PNG the page displays, whose output grid (its green cells) and
input grid (its blue cells) are counted. Both must be what ``convlab.ConvSpec`` (the
shape calculator) says. Then the same for the page ``convlab explore`` serves (Voila),
with its input-size sliders and 'same' padding. Screenshots of every step are saved in a
folder the test prints.

The browser: Debian's ``chromium`` (Playwright cannot download its own build here). When
it is missing and this process may install it (root, apt-get), the session fixture
installs it once and prints what that cost; where it cannot, the tests skip and say why.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from convlab import ConvSpec

from helpers import convlab_command

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_shapes_and_arithmetic.ipynb"
TIMEOUT_MS = 180_000  # a cold kernel on a busy 2-core machine
# the picture's colours (convlab.viz): output cells and the selected output; real input
# cells and those under the window
OUTPUT_FACES = ("#d9ead3", "#6aa84f")
INPUT_FACES = ("#cfe2f3", "#3d85c6")
PADDING_FACES = ("#f3f3f3", "#9fc5e8")  # padding cells, and those under the window
WINDOW = "#cc0000"  # the window's outline


# ------------------------------------------------------------------ the browser
def _install_chromium() -> str:
    """Debian's chromium, installed with apt-get if missing and allowed; else skip."""
    if _INSTALLED:
        return _INSTALLED[0]
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium on this machine, and this process cannot install it (it "
                    "needs root and apt-get): run `apt-get install chromium`")
    t0 = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            pytest.skip(f"chromium could not be installed: `{' '.join(cmd)}` exited "
                        f"{proc.returncode}: {proc.stderr.strip()[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium, but no `chromium` is on PATH")
    _say(f"installed Debian's chromium in {time.monotonic() - t0:.0f} s")
    _INSTALLED.append(found)
    return found


_REPORTER: list = []
_INSTALLED: list[str] = []  # once per session


def _say(line: str) -> None:
    """A line in pytest's own output, shown whether the test passes or not."""
    if _REPORTER:
        capture, reporter = _REPORTER
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[test_browser] {line}")
    else:
        print(f"[test_browser] {line}", file=sys.__stderr__)


@pytest.fixture(scope="module")
def browser(request):
    """Chromium, driven by Playwright, for this module only: Playwright's sync API keeps
    an event loop marked running in this thread while it is started, which nbclient
    (tests/test_notebooks.py, in this same process) must not find there."""
    plugins = request.config.pluginmanager
    found = [plugins.get_plugin("capturemanager"), plugins.get_plugin("terminalreporter")]
    _REPORTER[:] = found if all(found) else []
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not "
                                   "installed (pip install -e '.[test]')")
    path = _install_chromium()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chromium
        chromium.close()
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    assert loop is None, "Playwright left an event loop running in the test process"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser-screenshots")
    _say(f"screenshots in {folder}")
    return folder


# ------------------------------------------------------------------ servers
def _free_port() -> int:
    from convlab.explore import free_port

    return free_port()


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {timeout_s:.0f} s:\n"
                f"{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server started by this test (by its pid): the signal, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kernelspec(folder: Path) -> None:
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (convlab tests)", "language": "python"}))


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab on a free localhost port, serving a copy of notebook 02 (autosave must
    not write outputs into the repository), with every cell kept in the page."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e "
                                             "'.[test]')")
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp / "settings"
    for plugin, values in {
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                            "checkForUpdates": False}}.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    _kernelspec(tmp)
    env = dict(os.environ, JUPYTER_PATH=str(tmp), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), CONVLAB_QUICK="1")
    port = _free_port()
    log = tmp / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser",
                                 "--allow-root", "--ServerApp.ip=127.0.0.1", f"--port={port}",
                                 "--ServerApp.token=", "--ServerApp.password=",
                                 f"--ServerApp.root_dir={root}"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        _wait_http(f"http://127.0.0.1:{port}/lab", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)  # the server shuts its kernels down on SIGTERM


# ------------------------------------------------------------------ reading the page
def _mask(img: np.ndarray, faces: tuple[str, ...]) -> np.ndarray:
    mask = np.zeros(img.shape[:2], dtype=bool)
    for face in faces:
        rgb = np.array([int(face[k:k + 2], 16) for k in (1, 3, 5)])
        mask |= (np.abs(img - rgb) <= 3).all(axis=2)
    return mask


def _clusters(values: list[float], gap: float) -> int:
    values = sorted(values)
    return 1 + int(sum(b - a > gap for a, b in zip(values, values[1:]))) if values else 0


def _grid(img: np.ndarray, faces: tuple[str, ...]) -> tuple[tuple[int, int, int], tuple]:
    """(rows, columns, cells) of a grid drawn in ``faces`` colours, and its bounding box
    (top, bottom, left, right) in pixels: each cell is a region of its colour bounded by
    solid grid lines; text inside it only makes holes."""
    from scipy import ndimage

    labels, n = ndimage.label(_mask(img, faces))
    if n == 0:
        return (0, 0, 0), (0, 0, 0, 0)
    sizes = np.bincount(labels.ravel())[1:]
    keep = [k + 1 for k in range(n) if sizes[k] >= 0.3 * sizes.max()]  # no specks
    centres = ndimage.center_of_mass(labels > 0, labels, keep)
    side = float(np.sqrt(sizes.max()))
    ys, xs = np.nonzero(np.isin(labels, keep))
    return ((_clusters([c[0] for c in centres], side / 2),
             _clusters([c[1] for c in centres], side / 2), len(keep)),
            (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))


def _box(img: np.ndarray, faces: tuple[str, ...], min_px: float) -> tuple[int, int, int, int]:
    """The bounding box of the regions in ``faces`` colours of at least ``min_px`` pixels
    (anti-aliased text has pixels of any grey: they form specks only)."""
    from scipy import ndimage

    labels, n = ndimage.label(_mask(img, faces))
    sizes = np.bincount(labels.ravel())
    keep = [k for k in range(1, n + 1) if sizes[k] >= min_px]
    ys, xs = np.nonzero(np.isin(labels, keep))
    return (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) if ys.size else (0, 0, 0, 0)


def read_picture(png: bytes) -> dict[str, tuple]:
    """What a draw_conv picture shows, measured in its pixels: the output grid and the
    real input grid (rows, columns, cells), the padding around the input (top, bottom,
    left, right) and the kernel window's extent (rows, columns), both in cells."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    output, _ = _grid(img, OUTPUT_FACES)
    real, (top, bottom, left, right) = _grid(img, INPUT_FACES)
    if not real[0]:
        return {"output": output, "input": real}
    pitch_y, pitch_x = (bottom - top) / real[0], (right - left) / real[1]
    cell = pitch_y * pitch_x
    pt, pb, pl, pr = _box(img, INPUT_FACES + PADDING_FACES, 0.3 * cell)
    wt, wb, wl, wr = _box(img, (WINDOW,), 0.3 * min(pitch_y, pitch_x))  # a thin outline
    return {"output": output, "input": real,
            "padding": (round((top - pt) / pitch_y), round((pb - bottom) / pitch_y),
                        round((left - pl) / pitch_x), round((pr - right) / pitch_x)),
            "window": (round((wb - wt) / pitch_y), round((wr - wl) / pitch_x))}


def shown(spec: ConvSpec) -> dict[str, tuple]:
    """What read_picture must find in the picture of ``spec``."""
    return {"output": (spec.out_height, spec.out_width, spec.out_height * spec.out_width),
            "input": (spec.height, spec.width, spec.height * spec.width),
            "padding": tuple(spec.padding), "window": tuple(spec.effective_kernel_size)}


def _picture(scope) -> bytes:
    src = scope.locator(".widget-output img").first.get_attribute("src") or ""
    assert src.startswith("data:image/png;base64,"), src[:80]
    return base64.b64decode(src.split(",", 1)[1])


def printed(spec: ConvSpec) -> list[str]:
    """What the explorer's text must say for ``spec``."""
    return [f"output {spec.out_height} x {spec.out_width}",
            f"padding (t,b,l,r) = {spec.padding}",
            f") + 1 = {spec.out_height};", f") + 1 = {spec.out_width}"]


def expect(page, scope, spec: ConvSpec, shots: Path, name: str) -> None:
    """The page shows ``spec``: its output shape printed, and the picture drawn. A slider
    move reaches the kernel and comes back as a new label and a new picture, so both are
    read again until they show ``spec`` (or the time is up)."""
    scope.locator(".widget-output img").first.wait_for(timeout=TIMEOUT_MS)
    want_text, want_picture = printed(spec), shown(spec)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        label = scope.locator(".widget-html", has_text="H_out = floor").first.inner_text()
        label = " ".join(label.split())
        png = _picture(scope)
        got = read_picture(png)
        text_ok = all(" ".join(w.split()) in label for w in want_text)
        if (text_ok and got == want_picture) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(250)
    (shots / f"{name}.png").write_bytes(png)
    scope.screenshot(path=str(shots / f"{name}-page.png"))
    assert text_ok, f"{name}: the page prints {label!r}; ConvSpec says {want_text}"
    assert got == want_picture, (f"{name}: the picture shows {got}, ConvSpec says "
                                 f"{want_picture}; see {shots}")


def move(page, scope, description: str, key: str, times: int = 1) -> None:
    """Press ``key`` on the handle of the slider labelled ``description``."""
    slider = scope.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{description}$")))
    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(times):
        handle.press(key)


def run_all(page, tries: int = 3) -> None:
    """Run > Run All Cells, once the kernel is up. A click made while the page is still
    connecting to the kernel is dropped by JupyterLab (the cells stay unexecuted, no
    message), so the click is repeated until the first cell has run."""
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$")).first.wait_for(
        timeout=TIMEOUT_MS)
    for _ in range(tries):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        try:
            page.locator(".jp-InputPrompt", has_text=re.compile(r"\[\d+\]")).first.wait_for(
                timeout=30_000)
            return
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: click again
            continue
    raise AssertionError(f"Run All Cells, clicked {tries} times, ran no cell")


def _diagnose(page, shots: Path, name: str) -> str:
    """On a failure: a screenshot of the whole page, and the errors it shows."""
    try:
        page.screenshot(path=str(shots / f"{name}-failure.png"), full_page=True)
        errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']"
                              ).all_inner_texts()
        dialogs = page.locator(".jp-Dialog").all_inner_texts()
    except Exception as err:  # noqa: BLE001 - the page itself may be gone
        return f"(no diagnosis: {err})"
    return (f"screenshot {shots / (name + '-failure.png')}; errors on the page: "
            f"{[e[-1500:] for e in errors]}; dialogs: {dialogs}")


# ------------------------------------------------------------------ the tests
@pytest.mark.slow
def test_notebook_02_sliders_in_jupyterlab(browser, jupyterlab, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{jupyterlab}/lab/tree/{NOTEBOOK.name}")
        run_all(page)
        pad_by = page.locator(".widget-label", has_text=re.compile("^pad by$"))
        pad_by.wait_for(timeout=TIMEOUT_MS)
        cell = page.locator(".jp-Cell").filter(has=pad_by)
        assert cell.count() == 1
        # the notebook's explorer: a 5x7 input, kernel 3, stride 1, padding 1, dilation 1
        spec = ConvSpec.create((1, 5, 7), 1, 3, 1, 1, 1)
        expect(page, cell, spec, artifacts, "nb02-0-start")
        move(page, cell, "kernel", "ArrowRight")
        expect(page, cell, ConvSpec.create((1, 5, 7), 1, 4, 1, 1, 1), artifacts,
               "nb02-1-kernel4")
        move(page, cell, "stride", "ArrowRight")
        expect(page, cell, ConvSpec.create((1, 5, 7), 1, 4, 2, 1, 1), artifacts,
               "nb02-2-kernel4-stride2")
        page.screenshot(path=str(artifacts / "nb02-3-whole-page.png"), full_page=False)
    except Exception as err:
        raise AssertionError(f"{err}\n{_diagnose(page, artifacts, 'nb02')}") from err
    finally:
        page.close()


@pytest.fixture(scope="module")
def explore_page(tmp_path_factory):
    """``convlab explore`` as a teacher runs it, stopped as Ctrl-C stops it."""
    pytest.importorskip("voila", reason="voila is not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("explore")
    port = _free_port()
    log = tmp / "explore.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(convlab_command("explore", "--no-browser", "--port", str(port)),
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, log)
        assert f"http://127.0.0.1:{port}/" in log.read_text()  # it says where it is
        yield f"http://127.0.0.1:{port}/"
    finally:
        _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, log.read_text()[-2000:]


@pytest.mark.slow
def test_convlab_explore_page(browser, explore_page, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(explore_page)
        body = page.locator("body")
        page.locator(".widget-label", has_text=re.compile("^pad by$")).wait_for(
            timeout=TIMEOUT_MS)
        expect(page, body, ConvSpec.create((1, 5, 7), 1, 3), artifacts, "explore-0-start")
        move(page, body, "input height", "ArrowLeft", times=2)
        expect(page, body, ConvSpec.create((1, 3, 7), 1, 3), artifacts, "explore-1-height3")
        body.locator("select").first.select_option("same")
        expect(page, body, ConvSpec.create((1, 3, 7), 1, 3, padding="same"), artifacts,
               "explore-2-same")
        move(page, body, "dilation", "ArrowRight")
        same_d2 = ConvSpec.create((1, 3, 7), 1, 3, padding="same", dilation=2)
        expect(page, body, same_d2, artifacts, "explore-3-same-dilation2")
        assert f"padding (t,b,l,r) = {same_d2.padding}" in body.inner_text()
    except Exception as err:
        raise AssertionError(f"{err}\n{_diagnose(page, artifacts, 'explore')}") from err
    finally:
        page.close()


def test_picture_reader_reads_what_viz_draws():
    """read_picture, on pictures drawn here, finds what ConvSpec gives (so the browser
    tests' reading of the page can be trusted), and tells two pictures apart that only
    differ in padding and dilation."""
    import matplotlib

    matplotlib.use("Agg")
    from convlab import viz

    specs = [viz.grid_spec((5, 7), 3, padding=1), viz.grid_spec((4, 6), 2, stride=2),
             viz.grid_spec((3, 7), 3, padding="same"),
             viz.grid_spec((3, 7), 3, padding="same", dilation=2),
             viz.grid_spec((6, 5), (4, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 3)),
             viz.grid_spec((5, 4), 4, padding="same")]
    for k, spec in enumerate(specs):
        dpi = (72, 100)[k % 2]  # the page's size, and a larger one
        buf = io.BytesIO()
        viz.draw_conv(spec).savefig(buf, format="png", dpi=dpi)
        assert read_picture(buf.getvalue()) == shown(spec), (spec, dpi)
    assert shown(specs[2]) != shown(specs[3])
