"""Classroom exercises with self-checking answers (in the style of Kaggle's learntools).

>>> from convlab import exercises as ex
>>> def output_size(size, kernel, stride, padding, dilation):
...     raise NotImplementedError
>>> ex.output_size.check(output_size)      # doctest: +ELLIPSIS
Not attempted yet (output_size): ...
>>> ex.output_size.last_status
'not attempted'

Each exercise has ``check(fn)`` (prints the verdict and returns None, so a notebook
cell shows the message alone), ``last_status`` (the verdict: "correct", "incorrect",
"not attempted", or None before the first check) and ``last_message`` (its text),
``hint()`` (a nudge), ``hint(2)`` (more), ``hint(3)`` (nearly the answer) and
``solution()`` (prints the reference source and returns it as a callable).
``print(exercise)`` shows the task.  The notebooks in ``notebooks/exercises/`` hand
them out; ``convlab grade`` collects the verdicts of a class (``core.record_outcome``).

=================  ==========================================================
``output_size``    fn(size, kernel, stride, padding, dilation) -> int
``same_padding``   fn(kernel, dilation) -> (before, after)
``conv_loops``     fn(x, w, stride, padding, dilation) -> (N, K, Ho, Wo) array
``im2col``         fn(x, kernel, stride, padding, dilation) -> (C*kh*kw, Ho*Wo)
``winograd_1d``    fn(d, g) -> [y0, y1] with 4 multiplies
``prange_kernel``  @njit(parallel=True) fn(x, w) -> out, race-free
``cuda_kernel``    @cuda.jit fn(x, w, out), checked on the CUDA simulator
``cuda_tiled``     @cuda.jit fn(x, w, out) with shared-memory tiles, traffic checked
``conv_backward``  fn(x, w, dout, stride, padding, dilation) -> (dx, dw, db)
``fft_conv1d``     fn(x, w, padding) -> 1-D correlation with numpy.fft
=================  ==========================================================
"""

from __future__ import annotations

from .arithmetic import OutputSize, SamePadding
from .backward import ConvBackward
from .core import Exercise, Incorrect, NotAttempted
from .cuda import CudaKernel
from .cuda_tiled import CudaTiled
from .fourier import FFTConv1D
from .loops import ConvLoops, Im2col
from .parallel import PrangeKernel
from .winograd import Winograd1D

output_size = OutputSize()
same_padding = SamePadding()
conv_loops = ConvLoops()
im2col = Im2col()
winograd_1d = Winograd1D()
prange_kernel = PrangeKernel()
cuda_kernel = CudaKernel()
cuda_tiled = CudaTiled()
conv_backward = ConvBackward()
fft_conv1d = FFTConv1D()

ALL: list[Exercise] = [output_size, same_padding, conv_loops, im2col, winograd_1d,
                       prange_kernel, cuda_kernel, cuda_tiled, conv_backward, fft_conv1d]

__all__ = ["ALL", "Exercise", "Incorrect", "NotAttempted", "conv_backward", "conv_loops",
           "cuda_kernel", "cuda_tiled", "fft_conv1d", "im2col", "output_size",
           "prange_kernel", "same_padding", "winograd_1d"]
