"""The seed tutorial's walkthrough, as convlab must reproduce it (with its mistakes fixed)."""

import numpy as np

import convlab


def test_seed_walkthrough():
    conv = convlab.Conv2d(in_channels=5, out_channels=2, kernel_size=3)
    assert repr(conv) == "Conv2d(5, 2, kernel_size=(3, 3), stride=(1, 1))"
    assert conv.weight.shape == (2, 5, 3, 3)  # out x in x kh x kw
    assert conv.bias.shape == (2,)  # the seed printed 3: wrong, it is out_channels
    rng = np.random.default_rng(0)
    assert conv(rng.standard_normal((5, 10, 12)).astype(np.float32)).shape == (2, 8, 10)
    assert conv(rng.standard_normal((64, 5, 10, 12)).astype(np.float32)).shape == (64, 2, 8, 10)


def test_seed_same_sets_padding_not_kernel():
    conv = convlab.Conv2d(5, 2, kernel_size=4, padding="same")
    assert conv.kernel_size == (4, 4)  # unchanged
    spec = convlab.ConvSpec.create((5, 10, 12), 2, 4, padding="same")
    assert spec.padding == (1, 2, 1, 2)  # extra row/column bottom/right
    assert spec.output_shape == (2, 10, 12)


def test_seed_valid_is_padding_zero():
    a = convlab.ConvSpec.create((5, 10, 12), 2, 3, padding="valid")
    b = convlab.ConvSpec.create((5, 10, 12), 2, 3, padding=0)
    assert a == b
