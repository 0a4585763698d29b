"""convlab: how a 2-D convolution works and how it is made fast.

A PyTorch-compatible ``Conv2d`` / ``conv2d`` on NumPy arrays, backed by several
interchangeable Numba kernels (see ``convlab.kernels.KERNELS``).

>>> import numpy as np, convlab
>>> layer = convlab.Conv2d(5, 2, kernel_size=3)
>>> layer
Conv2d(5, 2, kernel_size=(3, 3), stride=(1, 1))
>>> layer(np.zeros((64, 5, 10, 12), np.float32)).shape
(64, 2, 8, 10)
"""

# Before anything loads NumPy: OpenBLAS reads how long its idle threads spin only then.
from . import _blas_threads  # noqa: F401  (imported for its effect, before NumPy)

# isort: split
# Then: the kernels are compiled with cache=True, and Numba refuses to define them when it
# has nowhere to write its cache (a read-only install); _numba_cache gives it a place.
from . import _numba_cache  # noqa: F401  (imported for its effect, before the kernels)

# isort: split
from . import kernels
from ._version import __version__
from .activation import ReLU, relu
from .backward import conv2d_bias, conv2d_input, conv2d_weight, conv_transpose2d
from .functional import conv2d, explain
from .gradcheck import GradcheckError, gradcheck
from .kernels import KERNELS
from .nn import Conv2d, ConvTranspose2d, no_grad
from .reference import conv2d_reference
from .shapes import ConvArgs, ConvSpec, TransposedSpec, output_shape, transposed_output_shape

__all__ = ["Conv2d", "ConvArgs", "ConvSpec", "ConvTranspose2d", "GradcheckError", "KERNELS",
           "ReLU", "TransposedSpec", "conv2d", "conv2d_bias", "conv2d_input", "conv2d_reference",
           "conv2d_weight", "conv_transpose2d", "explain", "gradcheck", "kernels",
           "output_shape", "relu", "transposed_output_shape", "__version__", "no_grad"]
