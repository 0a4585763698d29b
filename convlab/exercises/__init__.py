"""Classroom exercises with self-checking answers (in the style of Kaggle's learntools).

>>> from convlab import exercises as ex
>>> def output_size(size, kernel, stride, padding, dilation):
...     raise NotImplementedError
>>> ex.output_size.check(output_size)      # doctest: +ELLIPSIS
Not attempted yet (output_size): ...
False

Each exercise has ``check(fn)`` (prints the verdict, returns True/False),
``hint()``, ``solution()`` (prints the reference source and returns it as a
callable) and ``last_status``.  ``print(exercise)`` shows the task.  The
notebooks in ``notebooks/exercises/`` hand them out.

=================  ==========================================================
``output_size``    fn(size, kernel, stride, padding, dilation) -> int
``same_padding``   fn(kernel, dilation) -> (before, after)
``conv_loops``     fn(x, w, stride, padding, dilation) -> (N, K, Ho, Wo) array
``im2col``         fn(x, kernel, stride, padding, dilation) -> (C*kh*kw, Ho*Wo)
``winograd_1d``    fn(d, g) -> [y0, y1] with 4 multiplies
``prange_kernel``  @njit(parallel=True) fn(x, w) -> out, race-free
``cuda_kernel``    @cuda.jit fn(x, w, out), checked on the CUDA simulator
``fft_conv1d``     fn(x, w, padding) -> 1-D correlation with numpy.fft
=================  ==========================================================
"""

from __future__ import annotations

from .arithmetic import OutputSize, SamePadding
from .core import Exercise, Incorrect, NotAttempted
from .cuda import CudaKernel
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
fft_conv1d = FFTConv1D()

ALL: list[Exercise] = [output_size, same_padding, conv_loops, im2col, winograd_1d,
                       prange_kernel, cuda_kernel, fft_conv1d]

__all__ = ["ALL", "Exercise", "Incorrect", "NotAttempted", "conv_loops", "cuda_kernel",
           "fft_conv1d", "im2col", "output_size", "prange_kernel", "same_padding", "winograd_1d"]
