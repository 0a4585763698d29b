"""FFT convolution: every kernel size, rectangular and dilated kernels, groups, padding
modes and ragged tiles against the float64 oracle (a grid and Hypothesis) and live
PyTorch; the cached filter spectrum; the plan; refusals; NaN/Inf as documented."""

from __future__ import annotations

import importlib.util
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convlab
from convlab import kernels
from convlab.functional import WeightCache, prepare
from convlab.kernels import fft
from convlab.reference import compare, conv2d_reference

from helpers import assert_matches_oracle, conv_cases, random_case

FFT = kernels.get("fft")


def _check(x, w, b, spec, tile=None, transformed=None):
    """fft (optionally with a forced tile size) against the oracle, at its tolerance."""
    out = fft.fft_conv(x, w, b, spec, transformed, tile=tile)
    report = compare(out, conv2d_reference(x, w, b, spec), FFT.tolerance(spec, x.dtype))
    assert report.ok, f"tile {tile}: {report} on {spec.describe()}"
    return out


# ------------------------------------------------------------------ every kernel size
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", range(1, 16))
def test_every_kernel_size_matches_the_oracle(k, dtype):
    """Square kernels 1..15, 'same' padding (asymmetric for even k), on a non-square
    image; bias on odd k only."""
    rng = np.random.default_rng(k)
    x, w, b = random_case(rng, (2, 3, 17, 19), (4, 3, k, k), dtype, bias=k % 2 == 1)
    assert_matches_oracle("fft", x, w, b, padding="same")


GRID = [  # (kernel, padding, dilation, groups)
    ((1, 7), (0, 3), 1, 1),
    ((7, 2), "same", 1, 1),
    ((3, 5), (2, 0), (2, 1), 1),
    ((2, 3), "valid", (1, 3), 2),
    ((5, 5), 1, 2, "dw"),
    ((4, 4), "same", 1, 3),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,padding,dilation,groups", GRID)
def test_rectangular_dilated_grouped_kernels_match_the_oracle(kernel, padding, dilation,
                                                              groups, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((kernel, padding, dilation, groups)).encode()))
    c = 6
    g = c if groups == "dw" else groups
    x, w, b = random_case(rng, (2, c, 15, 13), (2 * c if groups == "dw" else 6, c // g)
                          + kernel, dtype)
    assert_matches_oracle("fft", x, w, b, padding=padding, dilation=dilation, groups=g)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_match_the_oracle(mode):
    rng = np.random.default_rng(7)
    x, w, b = random_case(rng, (1, 4, 12, 9), (5, 4, 5, 3))
    assert_matches_oracle("fft", x, w, b, padding=(2, 1), padding_mode=mode)


def test_unbatched_input():
    rng = np.random.default_rng(3)
    x, w, b = random_case(rng, (3, 11, 8), (2, 3, 4, 4))
    out = assert_matches_oracle("fft", x, w, b, padding="same")
    assert out.shape == (2, 11, 8)


# ------------------------------------------------------------------ tiles
@pytest.mark.parametrize("tile", [(7, 8), (8, 9), (9, 16), (12, 25), (40, 40)])
def test_any_tile_size_gives_the_same_answer(tile):
    """Overlap-save with ragged last tiles (steps 1..34 against a 13x21 output), tiles
    bigger than the whole image, odd and prime transform sizes."""
    rng = np.random.default_rng(11)
    x, w, b, spec = prepare(*random_case(rng, (2, 3, 13, 21), (5, 3, 7, 6)), padding="same")
    out = _check(x, w, b, spec, tile=tile)
    np.testing.assert_allclose(out, fft.fft_conv(x, w, b, spec), rtol=0, atol=1e-5)


def test_many_passes_give_the_same_answer(monkeypatch):
    """Inputs whose spectra exceed PASS_BYTES run in passes of tiles."""
    rng = np.random.default_rng(12)
    x, w, b, spec = prepare(*random_case(rng, (3, 4, 20, 22), (6, 4, 3, 3)), padding=1)
    per_tile = 2 * 8 * 5 * (4 + 6) * 4  # re/im x bins x (C + K) x 4 bytes, 8x8 tiles
    monkeypatch.setattr(fft, "PASS_BYTES", 5 * per_tile + 7)
    pl = fft._fixed_plan(spec, (8, 8), x.itemsize)
    assert pl.per_pass == 5
    n_tiles = spec.batch * pl.tiles[0] * pl.tiles[1]
    assert pl.per_pass < n_tiles  # really several passes, with a partial last one
    assert n_tiles % pl.per_pass
    _check(x, w, b, spec, tile=(8, 8))


@settings(max_examples=25, deadline=None)
@given(case=conv_cases(max_hw=12, stride1=True, kernel=None), data=st.data())
def test_random_specs_and_tiles_match_the_oracle(case, data):
    input_shape, weight_shape, args, dtype = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, w, b = random_case(rng, input_shape, weight_shape, dtype, bias=rng.random() < 0.7)
    xa, wa, ba, spec = prepare(x, w, b, **args)
    sh, sw = spec.effective_kernel_size
    tile = (data.draw(st.integers(sh, sh + 12)), data.draw(st.integers(sw, sw + 12)))
    _check(xa, wa, ba, spec, tile=tile)
    assert_matches_oracle("fft", x, w, b, **args)  # and the planned tile, through conv2d


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own
@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 15), kw=st.integers(1, 15), data=st.data())
def test_random_big_kernels_match_torch(k, kw, data):
    torch = pytest.importorskip("torch")
    groups = data.draw(st.sampled_from([1, 2]))
    h, w = data.draw(st.integers(k, k + 10)), data.draw(st.integers(kw, kw + 10))
    rng = np.random.default_rng(zlib.crc32(repr((k, kw, h, w, groups)).encode()))
    x, wt, b = random_case(rng, (2, 2 * groups, h, w), (2 * groups, 2, k, kw), np.float64)
    padding = data.draw(st.sampled_from([0, "same", (k // 2, 1)]))
    out = convlab.conv2d(x, wt, b, padding=padding, groups=groups, algo="fft")
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wt),
                                          torch.from_numpy(b), padding=padding,
                                          groups=groups).numpy()
    spec = prepare(x, wt, b, padding=padding, groups=groups)[3]
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(out, expected, rtol=0, atol=FFT.tolerance(spec, x.dtype) * scale)


# ------------------------------------------------------------------ the theorem's pieces
def test_filter_spectrum_is_the_conjugate_dft_of_the_dilated_zero_padded_filter():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3, 3, 2))  # groups=2: K=4, C/g=3
    spec = convlab.ConvSpec.from_shapes((1, 6, 20, 20), w.shape, dilation=(2, 3), groups=2)
    tile = (9, 10)
    u = fft.filter_spectrum(w, spec, tile)
    frame = np.zeros((4, 3) + tile)
    frame[:, :, ::2, ::3][:, :, :3, :2] = w  # taps 2 rows and 3 columns apart
    expected = np.conj(np.fft.rfft2(frame))  # (K, C/g, Th, Tw//2+1)
    got = (u[0] + 1j * u[1]).reshape(tile[0], tile[1] // 2 + 1, 2, 3, 2)  # (u, v, g, c, k)
    got = got.transpose(2, 4, 3, 0, 1).reshape(4, 3, tile[0], tile[1] // 2 + 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_plan_is_the_cheapest_fast_size_and_tiles_cover_the_output():
    spec = convlab.ConvSpec.create((8, 64, 56, 56), 64, 7, padding="same")
    for cached in (False, True):
        pl = fft.plan(spec, cached)
        sh, sw = spec.effective_kernel_size
        assert pl.step == (pl.tile[0] - sh + 1, pl.tile[1] - sw + 1)
        assert pl.tiles[0] * pl.step[0] >= spec.out_height > (pl.tiles[0] - 1) * pl.step[0]
        assert pl.tiles[1] * pl.step[1] >= spec.out_width > (pl.tiles[1] - 1) * pl.step[1]
        assert all(set(_factors(t)) <= {2, 3, 5} for t in pl.tile)
        others = [fft.cost_ns(spec, (a, b), cached) for a, b in
                  itertools.product(fft._candidates(sh, 62), fft._candidates(sw, 62))]
        assert pl.cost_ns == min(others)
    # a cached filter is paid once: the plan may afford bigger tiles, never smaller ones
    assert fft.plan(spec, True).bins >= fft.plan(spec, False).bins


def _factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


# ------------------------------------------------------------------ the cached spectrum
def test_cached_spectrum_gives_the_same_answer_for_every_input_size():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((5, 3, 5, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    spec0 = prepare(np.zeros((1, 3, 16, 16), np.float32), w, b, padding="same")[3]
    spectra = FFT.transform_weight(w, spec0)
    for size in ((16, 16), (9, 30), (40, 7)):
        x = rng.standard_normal((2, 3) + size).astype(np.float32)
        xa, wa, ba, spec = prepare(x, w, b, padding="same")
        tile = fft.plan(spec, cached=True).tile  # the same tile: bit for bit the same
        np.testing.assert_array_equal(fft.fft_conv(xa, wa, ba, spec, spectra, tile),
                                      fft.fft_conv(xa, wa, ba, spec, None, tile))
        _check(xa, wa, ba, spec, transformed=spectra)  # and the cached path's own plan
    assert len(spectra._spectra) >= 2  # one spectrum per tile size used


def test_conv2d_caches_the_spectrum_and_notices_a_weight_change():
    rng = np.random.default_rng(9)
    layer = convlab.Conv2d(4, 6, 5, padding=2, algo="fft", seed=1)
    x = rng.standard_normal((2, 4, 14, 12)).astype(np.float32)

    def expected():
        xa, wa, ba, spec = prepare(x, layer.weight, layer.bias, padding=2)
        return conv2d_reference(xa, wa, ba, spec), spec

    for _ in range(2):
        ref, spec = expected()
        assert compare(layer(x), ref, FFT.tolerance(spec, np.float32)).ok
    layer.weight[0, 1, 2, 3] += 1.0  # in place: the cache must see it
    ref, spec = expected()
    assert compare(layer(x), ref, FFT.tolerance(spec, np.float32)).ok


def test_a_spectrum_for_other_groups_or_dilation_is_refused():
    w = np.ones((4, 2, 3, 3))
    spec = convlab.ConvSpec.from_shapes((1, 4, 9, 9), w.shape, groups=2)
    spectra = FFT.transform_weight(w, spec)
    other = convlab.ConvSpec.from_shapes((1, 4, 9, 9), w.shape, groups=2, dilation=2)
    with pytest.raises(ValueError, match="dilation"):
        spectra.get(other, (9, 9))


def test_functional_cache_keeps_one_transform():
    rng = np.random.default_rng(10)
    x, w, b = random_case(rng, (1, 3, 10, 10), (2, 3, 6, 6))
    cache = WeightCache()
    first = convlab.conv2d(x, w, b, padding="same", algo="fft", cache=cache)
    second = convlab.conv2d(x, w, b, padding="same", algo="fft", cache=cache)
    assert len(cache) == 1
    np.testing.assert_array_equal(first, second)


# ------------------------------------------------------------------ refusals
def test_refuses_stride_and_says_why():
    x, w, b = random_case(np.random.default_rng(0), (1, 2, 9, 9), (2, 2, 3, 3))
    with pytest.raises(kernels.UnsupportedSpecError, match=r"stride 1.*\(2, 1\)"):
        convlab.conv2d(x, w, b, stride=(2, 1), algo="fft")


def test_without_rocket_fft_it_says_how_to_get_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rocket_fft" else real(name, *a))
    x, w, b = random_case(np.random.default_rng(0), (1, 2, 9, 9), (2, 2, 3, 3))
    with pytest.raises(kernels.KernelUnavailableError, match="pip install rocket-fft"):
        convlab.conv2d(x, w, b, algo="fft")


def test_a_tile_smaller_than_the_kernel_is_refused():
    x, w, b, spec = prepare(*random_case(np.random.default_rng(0), (1, 2, 9, 9), (2, 2, 5, 3)))
    with pytest.raises(ValueError, match="smaller than the kernel's span 5x3"):
        fft.fft_conv(x, w, b, spec, tile=(4, 8))


# ------------------------------------------------------------------ NaN and Inf
def _tiles_reading(spec, pl, row, col):
    """Output cells of every tile whose input window holds input pixel (row, col)."""
    (th, tw), (mh, mw), (nh, nw) = pl.tile, pl.step, pl.tiles
    top, _, left, _ = spec.padding
    mask = np.zeros((spec.out_height, spec.out_width), bool)
    for i, j in itertools.product(range(nh), range(nw)):
        if i * mh <= row + top < i * mh + th and j * mw <= col + left < j * mw + tw:
            mask[i * mh:(i + 1) * mh, j * mw:(j + 1) * mw] = True
    return mask


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("where", [(5, 6), (0, 0), (12, 3)])
def test_a_nonfinite_pixel_poisons_every_tile_that_reads_it(value, where):
    rng = np.random.default_rng(1)
    x, w, b = random_case(rng, (1, 3, 13, 17), (4, 3, 5, 5))
    x[0, 1][where] = value
    xa, wa, ba, spec = prepare(x, w, b, padding="same")
    tile = (9, 10)  # several tiles, overlapping by 4
    out = fft.fft_conv(xa, wa, ba, spec, tile=tile)
    predicted = _tiles_reading(spec, fft._fixed_plan(spec, tile, 4), *where)
    for k in range(4):  # every output channel, NaN (never Inf) exactly on those tiles
        np.testing.assert_array_equal(np.isnan(out[0, k]), predicted)
    assert not np.isinf(out).any()
    direct = ~np.isfinite(conv2d_reference(xa, wa, ba, spec))[0, 0]
    assert (direct <= predicted).all() and direct.sum() < predicted.sum()


def test_a_nonfinite_weight_poisons_its_output_channel():
    rng = np.random.default_rng(2)
    x, w, b = random_case(rng, (2, 3, 10, 11), (4, 3, 3, 3))
    w[2, 1, 0, 2] = np.inf
    out = convlab.conv2d(x, w, b, padding=1, algo="fft")
    assert np.isnan(out[:, 2]).all() and np.isfinite(np.delete(out, 2, axis=1)).all()
    assert FFT.nonfinite != "exact" and "tile" in FFT.nonfinite


# ------------------------------------------------------------------ registry, auto, suite
def test_stages_end_with_the_whole_result():
    rng = np.random.default_rng(4)
    x, w, b, spec = prepare(*random_case(rng, (1, 3, 12, 12), (4, 3, 5, 5)), padding=2)
    for cached in (None, FFT.transform_weight(w, spec)):
        steps = FFT.stages(x, w, b, spec, cached)
        names = [name for name, _ in steps]
        assert names[-3:] == ["forward FFTs", "products", "inverse FFTs"]
        assert (names[0] == "filter spectrum") == (cached is None)
        np.testing.assert_array_equal(steps[-1][1](), FFT(x, w, b, spec))


def test_auto_picks_fft_for_big_kernels_and_says_why_not_for_small_ones():
    assert convlab.explain((8, 64, 56, 56), (64, 64, 7, 7), padding=3).kernel.name == "fft"
    assert convlab.explain((8, 64, 56, 56), (64, 64, 5, 5), padding=2).kernel.name == "fft"
    small = convlab.explain((8, 8, 56, 56), (8, 8, 7, 7), padding=3)
    assert small.kernel.name != "fft"
    assert "too few for the transforms to pay" in dict(small.passed_over)["fft"]
    dilated = convlab.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=2, dilation=2)
    assert dilated.kernel.name != "fft"  # 9 taps spread over a 5x5 span
    assert convlab.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1).kernel.name == \
        "winograd_f4"


def test_the_kernels_suite_is_the_crossover_sweep():
    from convlab.bench import suite_layers

    layers = suite_layers("kernels")
    assert [la.kernel_size for la in layers] == [3, 5, 7, 9, 11, 13, 15]
    for layer in layers:
        spec = layer.spec(8)
        assert (spec.in_channels, spec.out_channels, spec.height, spec.width) == (64, 64, 56,
                                                                                    56)
        assert spec.output_shape == (8, 64, 56, 56) and spec.stride == (1, 1)
    assert suite_layers("kernels", ["k7_64x56"])[0].kernel_size == 7


def test_inputs_are_not_modified():
    rng = np.random.default_rng(6)
    x, w, b = random_case(rng, (2, 3, 9, 10), (4, 3, 4, 3))
    copies = [a.copy() for a in (x, w, b)]
    convlab.conv2d(x, w, b, padding="same", algo="fft")
    for a, c in zip((x, w, b), copies, strict=True):
        np.testing.assert_array_equal(a, c)


def test_auto_passes_over_fft_for_nonfinite_input_and_keeps_torchs_pattern():
    from convlab.reference import conv2d_reference as ref

    rng = np.random.default_rng(13)
    x = rng.standard_normal((8, 64, 24, 24)).astype(np.float32)
    w = rng.standard_normal((64, 64, 7, 7)).astype(np.float32)
    assert convlab.explain(x, w, padding=3).kernel.name == "fft"
    x[2, 5, 10, 11] = np.nan
    choice = convlab.explain(x, w, padding=3)
    assert choice.kernel.name != "fft"
    assert "NaN or Inf" in dict(choice.passed_over)["fft"]
    xa, wa, _, spec = prepare(x, w, None, padding=3)
    np.testing.assert_array_equal(np.isnan(convlab.conv2d(x, w, padding=3)),
                                  np.isnan(ref(xa, wa, None, spec)))


def test_float32_overflows_sooner_than_direct_convolution():
    """The zero-frequency bin sums a whole tile: 64 pixels of 3e37 overflow float32 where
    the 3x3 windows' sums (9 of them, times 0.1) do not (docs/design.md, "Numerics")."""
    x = np.full((1, 1, 8, 8), 3e37, np.float32)
    w = np.full((1, 1, 3, 3), 0.1, np.float32)
    direct = convlab.conv2d(x, w, algo="naive")
    assert np.isfinite(direct).all()
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(fft.fft_conv(*prepare(x, w), tile=(8, 8))).all()


def test_the_filter_spectrum_is_kept_under_its_cap(monkeypatch):
    spec = convlab.ConvSpec.create((8, 64, 56, 56), 64, 7, padding="same")
    free = fft.plan(spec, cached=True)
    cap = fft.spectrum_bytes(spec, free.tile) // 2  # the free choice no longer fits
    monkeypatch.setattr(fft, "SPECTRUM_BYTES", cap)
    fft._plan.cache_clear()
    try:
        capped = fft.plan(spec, cached=True)
        assert fft.spectrum_bytes(spec, capped.tile) <= cap and capped.tile != free.tile
        monkeypatch.setattr(fft, "SPECTRUM_BYTES", 1000)  # nothing fits: the smallest
        fft._plan.cache_clear()
        smallest = fft.plan(spec, cached=True)
        assert smallest.tile == (8, 8)  # 7x7 'same': the smallest fast size >= the span
        why = fft._auto_when(spec)
        assert why is not None and "filter spectrum would take" in why
        x, w, b, small = prepare(*random_case(np.random.default_rng(0), (1, 3, 12, 10),
                                              (4, 3, 7, 7)), padding="same")
        _check(x, w, b, small)  # still right when run explicitly
    finally:
        fft._plan.cache_clear()
