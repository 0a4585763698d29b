"""Pictures of convolution arithmetic, in the spirit of conv_arithmetic and the
convolution visualizer: the input with its padding, the kernel window with its
dilation gaps, the stride, the output; numbered frames and an animation of the
sliding window; which inputs feed one output; the im2col matrix; Winograd's
overlapping input tiles; groups as channel connections.

Two layers, so tests can check the pictures without looking at pixels:

* **data** (:func:`window`, :func:`readers`, :func:`frames`, :func:`im2col_indices`,
  :func:`winograd_tiles`, :func:`group_connections`): plain tuples and arrays,
  every size taken from a :class:`~convlab.shapes.ConvSpec` (never re-derived);
* **drawings** (``draw_*``, :func:`animate_conv`): build a
  :class:`matplotlib.figure.Figure` from that data, without pyplot, so they work
  with the Agg backend and a notebook shows each figure exactly once.  Every
  grid cell is a patch whose ``gid`` is ``"role:row,col"``; :func:`drawn_cells`
  reads the roles back ("tap" = a real input cell under the window).

Coordinates are (row, column) in the *input's* frame: padding cells have a row
or column below 0 or past the edge.  Everything counts from 0, as NumPy and PyTorch
do: rows, columns, weights (``w00`` is ``w[0, 0]``), outputs and frames (frame 0
computes output (0, 0)).

The pictures live in four modules, one subject each, and every public name is importable
from here (``from convlab import viz; viz.draw_conv(...)``):

* :mod:`convlab.viz_grid`: the arithmetic grid, its data and drawings (above);
* :mod:`convlab.viz_explorer`: the interactive explorer and receptive-field widget;
* :mod:`convlab.viz_backward`: the backward pass (grad_input, transposed, grad_weight);
* :mod:`convlab.viz_fft`: FFT convolution (circular correlation, overlap-save/-add tiles).
"""

from __future__ import annotations

from .viz_backward import (
    DilatedGrid,
    dilated_grid,
    draw_grad_input,
    draw_grad_weight,
    draw_output_gradient,
    draw_transposed,
    grad_input_window,
    weight_gradient_taps,
)
from .viz_explorer import (
    ArithmeticExplorer,
    ArithmeticState,
    arithmetic_widget_state,
    interactive_arithmetic,
    interactive_receptive_field,
)
from .viz_fft import (
    circular_correlation,
    draw_circular_vs_linear,
    draw_fft_tiles,
    fft_tiles,
    overlap_add_blocks,
    wrapped_outputs,
)
from .viz_grid import (
    Tile,
    Window,
    animate_conv,
    draw_conv,
    draw_frames,
    draw_groups,
    draw_im2col,
    draw_receptive_field,
    draw_winograd_tiles,
    drawn_cells,
    frames,
    grid_spec,
    group_connections,
    im2col_indices,
    im2col_matrix,
    readers,
    save_gif,
    window,
    winograd_tiles,
)

__all__ = [
    "Tile", "Window", "animate_conv", "draw_conv", "draw_frames", "draw_groups", "draw_im2col",
    "draw_receptive_field", "draw_winograd_tiles", "drawn_cells", "frames", "grid_spec",
    "group_connections", "im2col_indices", "im2col_matrix", "readers", "save_gif", "window",
    "winograd_tiles", "ArithmeticExplorer", "ArithmeticState", "arithmetic_widget_state",
    "interactive_arithmetic", "interactive_receptive_field", "DilatedGrid", "dilated_grid",
    "draw_grad_input", "draw_grad_weight", "draw_output_gradient", "draw_transposed",
    "grad_input_window", "weight_gradient_taps", "circular_correlation",
    "draw_circular_vs_linear", "draw_fft_tiles", "fft_tiles", "overlap_add_blocks",
    "wrapped_outputs",
]
