"""The convolution-arithmetic explorer: sliders for kernel, stride, padding and dilation
over a small grid, the output-size formula with its numbers, and the receptive-field
widget (notebook 02, ``convlab explore``).

:func:`arithmetic_widget_state` is the explorer without widgets (what the tests check):
settings in, the clamped settings, their :class:`~convlab.shapes.ConvSpec` and a message
out; :class:`ArithmeticExplorer` puts ipywidgets around it and redraws with
:func:`convlab.viz_grid.draw_conv`.  Importable as ``convlab.viz.<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from .shapes import ConvSpec, IntOrPair
from .viz_grid import (
    Cell,
    draw_conv,
    draw_receptive_field,
    grid_spec,
)

CONTROLS = ("kernel", "stride", "padding", "dilation")


@dataclass(frozen=True)
class ArithmeticState:
    """What the arithmetic explorer shows: the (clamped) settings and their spec."""

    size: Cell
    kernel: int
    stride: int
    padding: int | str
    dilation: int
    spec: ConvSpec
    message: str  # what was clamped and why; "" if nothing

    def formula(self) -> str:
        """The output-size formula with this state's numbers (values from the spec)."""
        s, (dh, _), (kh, _) = self.spec, self.spec.dilation, self.spec.kernel_size
        t, b, left, r = s.padding
        return (f"H_out = floor(({s.height} + {t} + {b} - {dh}*({kh}-1) - 1) / {s.stride[0]})"
                f" + 1 = {s.out_height};   W_out = floor(({s.width} + {left} + {r} - {dh}*("
                f"{kh}-1) - 1) / {s.stride[1]}) + 1 = {s.out_width}")


def _try_spec(size: Cell, kernel: int, stride: int, padding: int | str,
              dilation: int) -> ConvSpec | None:
    try:
        return grid_spec(size, kernel, stride, padding, dilation)
    except ValueError:
        return None


def arithmetic_widget_state(size: IntOrPair, kernel: int, stride: int, padding: int | str,
                            dilation: int, changed: str | None = None) -> ArithmeticState:
    """Clamp the explorer's settings so the output never vanishes (at least 1x1).

    The control the user just ``changed`` gives way first (a kernel or dilation too
    big for the padded input stops at the largest that fits; padding shrunk too far
    stops at the smallest that fits); otherwise dilation, then the kernel, shrink.
    'same' needs stride 1, as in PyTorch.
    """
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"input size must be at least 1x1, got {size}")
    notes = []
    values: dict[str, Any] = {"kernel": max(1, int(kernel)), "stride": max(1, int(stride)),
                              "dilation": max(1, int(dilation)),
                              "padding": padding if isinstance(padding, str)
                              else max(0, int(padding))}
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ValueError(f"padding must be an int, 'same' or 'valid'; got {padding!r}")
    if values["padding"] == "same" and values["stride"] != 1:
        values["stride"] = 1
        notes.append("stride 1: PyTorch refuses padding='same' for strided convolutions")
    steps = {"kernel": -1, "dilation": -1, "padding": +1}
    first = [changed] if changed in ("kernel", "dilation") else []
    if changed == "padding" and isinstance(values["padding"], int):
        first = ["padding"]  # shrunk too far: stop at the smallest padding that fits
    before = dict(values)
    for name in first + ["dilation", "kernel"]:
        while _try_spec(size, **values) is None:
            if name != "padding" and values[name] == 1:
                break
            values[name] += steps[name]
    for name in CONTROLS:
        if values[name] != before[name]:
            notes.append(f"{name} {before[name]} -> {values[name]}: otherwise the window "
                         f"would not fit in the padded {size[0]}x{size[1]} input")
    spec = grid_spec(size, values["kernel"], values["stride"], values["padding"],
                     values["dilation"])
    return ArithmeticState(size, values["kernel"], values["stride"], values["padding"],
                           values["dilation"], spec, "; ".join(notes))


class ArithmeticExplorer:
    """Sliders for kernel, stride, padding (a number, 'same' or 'valid') and dilation
    that redraw :func:`draw_conv` and the output shape.  Displays itself in Jupyter;
    ``controls``, ``state`` and ``figure`` are there for tests and curious students."""

    def __init__(self, size: IntOrPair = (5, 7), kernel: int = 3, stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, max_kernel: int = 7) -> None:
        import ipywidgets as w  # only needed here; the rest of viz works without it

        self.size = (size, size) if isinstance(size, int) else tuple(size)
        mode = padding if isinstance(padding, str) else "number"
        style = {"description_width": "70px"}
        self.controls = {
            "kernel": w.IntSlider(kernel, 1, max_kernel, description="kernel", style=style),
            "stride": w.IntSlider(stride, 1, 4, description="stride", style=style),
            "mode": w.Dropdown(options=["number", "same", "valid"], value=mode,
                               description="padding", style=style),
            "padding": w.IntSlider(padding if isinstance(padding, int) else 0, 0, 4,
                                   description="pad by", style=style),
            "dilation": w.IntSlider(dilation, 1, 4, description="dilation", style=style),
        }
        self.label = w.HTML()
        self.output = w.Output()
        self.figure: Figure | None = None
        self.state: ArithmeticState | None = None
        self._busy = False
        for name, ctl in self.controls.items():
            ctl.observe(lambda change, name=name: self.update(name), names="value")
        self.widget = w.VBox([w.HBox([w.VBox([self.controls[n] for n in ("kernel", "stride")]),
                                      w.VBox([self.controls[n] for n in ("mode", "padding")]),
                                      self.controls["dilation"]]),
                              self.label, self.output])
        self.update(None)

    def update(self, changed: str | None) -> ArithmeticState:
        """Recompute the state after ``changed`` moved, push the clamped values back
        into the sliders, redraw."""
        if self._busy:
            return self.state  # type: ignore[return-value]
        c = self.controls
        padding = c["padding"].value if c["mode"].value == "number" else c["mode"].value
        which = "padding" if changed == "mode" else changed
        state = arithmetic_widget_state(self.size, c["kernel"].value, c["stride"].value,
                                        padding, c["dilation"].value, which)
        self._busy = True
        try:
            for name in ("kernel", "stride", "dilation"):
                c[name].value = getattr(state, name)
            if isinstance(state.padding, int):
                c["padding"].value = state.padding
            c["padding"].disabled = c["mode"].value != "number"
            c["stride"].disabled = c["mode"].value == "same"
        finally:
            self._busy = False
        self.state = state
        note = f"<br><i>{state.message}</i>" if state.message else ""
        self.label.value = (f"<b>output {state.spec.out_height} x {state.spec.out_width}</b>"
                            f" &nbsp; padding (t,b,l,r) = {state.spec.padding}<br>"
                            f"<code>{state.formula()}</code>{note}")
        self.figure = draw_conv(state.spec, (0, 0))
        self._show()
        return state

    def _show(self) -> None:
        if not _in_notebook():
            return  # plain Python (tests): the state and figure are all there is
        from IPython.display import display

        self.output.clear_output(wait=True)
        with self.output:
            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive_arithmetic(size: IntOrPair = (5, 7), **settings: Any) -> ArithmeticExplorer:
    """The conv-arithmetic explorer for a ``size`` input (show it as a cell's last line)."""
    return ArithmeticExplorer(size, **settings)


def interactive_receptive_field(spec: ConvSpec) -> Any:
    """Sliders for an output position (i, j) that redraw which inputs feed it."""
    import ipywidgets as w
    from IPython.display import display

    out = w.Output()

    def show(i: int, j: int) -> None:
        fig, cells = draw_receptive_field(spec, i, j)
        with out:
            out.clear_output(wait=True)
            display(fig)
            print(f"output ({i}, {j}) reads {len(cells)} input cells: {sorted(cells)}")

    sliders = {"i": w.IntSlider(0, 0, spec.out_height - 1, description="row i"),
               "j": w.IntSlider(0, 0, spec.out_width - 1, description="col j")}
    w.interactive_output(show, sliders)
    return w.VBox([w.HBox(list(sliders.values())), out])


__all__ = [
    "ArithmeticExplorer", "ArithmeticState", "arithmetic_widget_state",
    "interactive_arithmetic", "interactive_receptive_field",
]
