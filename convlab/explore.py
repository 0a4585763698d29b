"""``convlab explore``: the conv-arithmetic explorer as a page of its own, to project in class.

Sliders for the input's height and width, the kernel, the stride, the padding (a number,
'same' or 'valid') and the dilation; the picture (:func:`convlab.viz.draw_conv`) and the
output size (its formula with the numbers filled in) redraw as they move. It is notebook
02's explorer (:class:`convlab.viz.ArithmeticExplorer`) with the input size as sliders
too.

The page is served by Voila: a one-cell notebook, written to a temporary folder, whose
code Voila hides, run by a kernel of this Python. Why Voila and not a static HTML
export: the picture and every number then come from the same ``ConvSpec`` and
``draw_conv`` as the notebooks and ``convlab shape``. A static page would need the
output-size formula and the drawing again in JavaScript (a second place for the formula
convlab keeps in one), or every combination of six sliders drawn in advance (tens of
thousands of pictures). The cost: the teacher's machine runs a Python kernel while the
page is open, as it does for the notebooks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .shapes import IntOrPair

KERNEL_NAME = "convlab-explore"
TITLE = "Convolution arithmetic"


class ConvExplorer:
    """Input-size sliders above :class:`convlab.viz.ArithmeticExplorer`.

    ``explorer`` is the arithmetic explorer (its ``controls``, ``state`` and ``figure``);
    ``controls`` adds "height" and "width". Displays itself in Jupyter and Voila.
    """

    def __init__(self, size: IntOrPair = (5, 7), max_size: int = 12, **settings: Any) -> None:
        import ipywidgets as w

        from .viz import ArithmeticExplorer

        h, wd = (size, size) if isinstance(size, int) else size
        self.explorer = ArithmeticExplorer((h, wd), **settings)
        style = {"description_width": "90px"}
        self.controls = {
            "height": w.IntSlider(h, 1, max_size, description="input height", style=style),
            "width": w.IntSlider(wd, 1, max_size, description="input width", style=style),
            **self.explorer.controls}
        for name in ("height", "width"):
            self.controls[name].observe(lambda change: self._resize(), names="value")
        formula = ("H<sub>out</sub> = &lfloor;(H + pad<sub>top</sub> + pad<sub>bottom</sub> "
                   "&minus; dilation&middot;(kernel &minus; 1) &minus; 1) / stride&rfloor; + 1")
        self.widget = w.VBox([w.HTML(f"<h2>{TITLE}</h2><p>{formula}; W<sub>out</sub> "
                                     "the same with the width's numbers.</p>"),
                              w.HBox([self.controls["height"], self.controls["width"]]),
                              self.explorer.widget])

    def _resize(self) -> None:
        self.explorer.size = (self.controls["height"].value, self.controls["width"].value)
        self.explorer.update("size")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def page_notebook(size: tuple[int, int]) -> dict[str, Any]:
    """The one-cell notebook Voila serves."""
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "explorer",
                   "metadata": {}, "outputs": [],
                   "source": ("%matplotlib inline\nfrom convlab.explore import ConvExplorer\n"
                              f"ConvExplorer({tuple(size)!r})")}],
        "metadata": {"kernelspec": {"name": KERNEL_NAME, "display_name": "convlab explore",
                                    "language": "python"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5}


def free_port() -> int:
    """A TCP port nothing listens on now, on this machine's loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(size: tuple[int, int] = (5, 7), port: int | None = None, open_browser: bool = True,
          ip: str = "127.0.0.1") -> int:
    """Serve the explorer with Voila until interrupted (Ctrl-C); returns Voila's status."""
    try:
        import voila  # noqa: F401 - only to say what is missing
    except ImportError:
        raise RuntimeError("convlab explore needs Voila: pip install -e '.[notebooks]'") \
            from None
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="convlab-explore-") as tmp:
        folder = Path(tmp)
        spec = folder / "kernels" / KERNEL_NAME
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "convlab explore", "language": "python"}))
        notebook = folder / "convlab_explore.ipynb"
        notebook.write_text(json.dumps(page_notebook(size)))
        env = dict(os.environ, JUPYTER_PATH=os.pathsep.join(
            [tmp] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]))
        argv = [sys.executable, "-m", "voila", str(notebook), f"--port={port}",
                f"--Voila.ip={ip}", "--Voila.root_dir=" + tmp]
        if not open_browser:
            argv.append("--no-browser")
        print(f"convlab explore: the explorer is at http://{ip}:{port}/ (Ctrl-C stops it)",
              flush=True)
        # Voila in a session of its own: Ctrl-C in the terminal reaches this process only,
        # which then stops Voila with SIGTERM (Voila shuts its kernel down on SIGTERM);
        # SIGTERM and SIGHUP sent here do the same, so no kernel is left behind
        proc = subprocess.Popen(argv, env=env, cwd=tmp, start_new_session=True)

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
