"""The backward API: conv2d_input / conv2d_weight / conv2d_bias / conv_transpose2d, the
registry's ops, the padding adjoint, auto and explain, errors in PyTorch's words, and
the adjoint identities that tie the gradients to the forward without any oracle."""

import dataclasses

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab import plan as planmod
from convlab.kernels.im2col import workspace_cap
from convlab.kernels.registry import OPS, kernels_for, register
from convlab.padding import pad, pad_adjoint
from convlab.reference_backward import conv2d_input_reference, fold_padding

ALGOS = ["naive", "im2col", "parallel"]


@pytest.fixture
def rng():
    return np.random.default_rng(10)


# ------------------------------------------------------------------ the registry's ops
def test_ops_and_tables():
    assert OPS == ("forward", "grad_input", "grad_weight")
    assert kernels_for("forward") is kernels.KERNELS  # KERNELS keeps meaning the forward
    for op in ("grad_input", "grad_weight"):
        assert all(k.op == op for k in kernels_for(op).values())
        assert not set(kernels_for(op).values()) & set(kernels.KERNELS.values())
    assert kernels.get("naive").op == "forward"
    assert kernels.get("naive", "grad_weight").op == "grad_weight"
    with pytest.raises(ValueError, match="unknown op 'backward'; ops: forward, grad_input"):
        kernels_for("backward")


def test_get_unknown_name_lists_the_ops_kernels():
    with pytest.raises(ValueError, match=r"unknown algo 'winograd_f4' for grad_input; known "
                                         r"algorithms: auto, im2col, naive, parallel"):
        kernels.get("winograd_f4", "grad_input")


def test_register_per_op_and_forward_only_hooks():
    table = kernels_for("grad_weight")
    try:
        register("naive_twin", op="grad_weight", description="t")(lambda x, g, s: None)
        with pytest.raises(ValueError, match="a grad_weight kernel named 'naive_twin'"):
            register("naive_twin", op="grad_weight", description="t")(lambda x, g, s: None)
        assert "naive_twin" not in kernels.KERNELS  # another op: not a forward kernel
    finally:
        table.pop("naive_twin", None)
    with pytest.raises(TypeError, match="stages only exist for forward kernels"):
        register("x", op="grad_input", description="t", stages=lambda *a: [])
    # a grad_input kernel has a weight to transform (Conv2d keeps it); grad_weight has none
    with pytest.raises(TypeError, match="transform_weight only exists for forward and "
                                        "grad_input kernels"):
        register("x", op="grad_weight", description="t", transform_weight=lambda w, s: w)
    assert "x" not in kernels_for("grad_weight") and "x" not in kernels_for("grad_input")
    with pytest.raises(ValueError, match="unknown op"):
        register("x", op="sideways", description="t")


def test_grad_kernel_is_not_called_like_a_forward(rng):
    kern = kernels.get("naive", "grad_input")
    spec = convlab.ConvSpec.from_shapes((1, 2, 4, 4), (3, 2, 3, 3))
    with pytest.raises(TypeError, match=r"called as run\(a, b, spec\)"):
        kern.execute(np.zeros((1, 3, 2, 2)), np.zeros((3, 2, 3, 3)), None, spec)


def test_choose_per_op(monkeypatch):
    spec = convlab.ConvSpec.from_shapes((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert kernels.choose(spec, op="grad_input").kernel.op == "grad_input"
    fakes = {"only": dataclasses.replace(kernels.get("naive", "grad_input"), name="only",
                                         auto_rank=1, auto_when=lambda s: "declines")}
    monkeypatch.setitem(kernels.registry._GRAD_KERNELS, "grad_input", fakes)
    with pytest.raises(kernels.UnsupportedSpecError,
                       match="no registered grad_input kernel can run"):
        kernels.choose(spec, op="grad_input")


def test_explain_covers_backward():
    choice = convlab.explain((8, 256, 14, 14), (256, 256, 3, 3), padding=1, op="grad_weight")
    assert choice.kernel.name == "polyphase" and choice.kernel.op == "grad_weight"  # Winograd
    s2 = dict(stride=2, padding=1, op="grad_weight")
    choice = convlab.explain((8, 256, 14, 14), (512, 256, 3, 3), **s2)
    assert choice.kernel.name == "im2col"  # the whole batch's columns, one GEMM
    with workspace_cap(1 << 20):  # they no longer fit: the chunked GEMMs lose
        choice = convlab.explain((8, 256, 14, 14), (512, 256, 3, 3), **s2)
    assert choice.kernel.name == "parallel"
    assert "would not fit the workspace cap" in dict(choice.passed_over)["im2col"]
    choice = convlab.explain((8, 16, 112, 112), (64, 16, 3, 3), padding=1, op="grad_weight")
    assert choice.kernel.name == "parallel" and choice.kernel.op == "grad_weight"
    assert "its GEMM would be 64 x 144" in dict(choice.passed_over)["im2col"]
    choice = convlab.explain((8, 64, 56, 56), (128, 64, 1, 1), stride=2, op="grad_weight")
    assert choice.kernel.name == "im2col"
    choice = convlab.explain((8, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1,
                             op="grad_input")
    assert choice.kernel.name == "im2col"  # one GEMM + col2im beat the 4 sub-problems
    assert "slower than im2col's own" in dict(choice.passed_over)["polyphase"]
    choice = convlab.explain((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3,
                             op="grad_input")
    assert choice.kernel.name == "polyphase"  # the stem: thin, strided
    choice = convlab.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1, op="grad_input")
    assert choice.kernel.name == "polyphase" and choice.kernel.op == "grad_input"
    choice = convlab.explain((8, 16, 56, 56), (64, 16, 3, 3), padding=1, op="grad_input")
    assert choice.kernel.name == "parallel"
    assert dict(choice.passed_over)["polyphase"].startswith("only 16 input / 64 output")
    assert dict(choice.passed_over)["im2col"].startswith("its GEMM would be 64 x 144")
    w = np.ones((64, 64, 3, 3), np.float32)
    w[0, 0, 1, 1] = np.inf  # the dilated grad_output's zeros would meet it: not parallel
    choice = convlab.explain((8, 64, 56, 56), w, padding=1, op="grad_input")
    assert choice.kernel.name not in ("parallel", "polyphase")
    assert "NaN or Inf" in dict(choice.passed_over)["parallel"]
    assert "NaN or Inf" in dict(choice.passed_over)["polyphase"]


def test_grad_input_rule_knows_the_layer_keeps_the_transform():
    """512@7: 32 Winograd tiles per call do not pay back transforming the flipped
    weight on every call (conv2d_input), but Conv2d.backward keeps that transform, so
    its plan takes polyphase's Winograd (kernels/polyphase_backward.py, the rule)."""
    x = np.zeros((8, 512, 7, 7), np.float32)
    per_call = convlab.explain(x.shape, (512, 512, 3, 3), padding=1, op="grad_input")
    assert per_call.kernel.name == "im2col"
    assert "on every call is not paid back" in dict(per_call.passed_over)["polyphase"]
    layer = convlab.Conv2d(512, 512, 3, padding=1)
    assert layer.explain(x, op="grad_input").kernel.name == "polyphase"
    spec = layer.plan(x).spec
    assert planmod.plan(spec, np.float32, cached=True).grad_input.kernel.name == "polyphase"
    assert planmod.plan(spec, np.float32).grad_input.kernel.name == "im2col"


# ------------------------------------------------------------------ adjoint identities
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("args", [
    dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1)),
    dict(padding="same", dilation=(1, 2), padding_mode="reflect"),
    dict(padding=(2, 1), groups=3, padding_mode="circular"),
    dict(padding=1, groups=6, stride=2, padding_mode="replicate"),
])
def test_gradients_are_the_forwards_adjoints(algo, args, rng):
    """<conv2d(x, w), g> is bilinear: its derivative along x is <x, grad_input> and along
    w is <w, grad_weight> (no oracle involved; float64)."""
    x = rng.standard_normal((2, 6, 9, 8))
    w = rng.standard_normal((6, 6 // args.get("groups", 1), 3, 4))
    out = convlab.conv2d(x, w, **args)
    g = rng.standard_normal(out.shape)
    gx = convlab.conv2d_input(x.shape, w, g, **args, algo=algo)
    gw = convlab.conv2d_weight(x, w.shape, g, **args, algo=algo)
    total = float((out * g).sum())
    assert np.isclose(float((w * gw).sum()), total, rtol=1e-10)
    # linear in x too, for every padding mode (pad is linear): the fold is pad's adjoint
    assert np.isclose(float((x * gx).sum()), total, rtol=1e-10)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [(1, 2), (3, 0), "same"])
def test_pad_adjoint_is_the_adjoint_of_pad(mode, padding, rng):
    spec = convlab.ConvSpec.from_shapes((2, 3, 5, 6), (1, 3, 4, 3), padding=padding,
                                        padding_mode=mode)
    x = rng.standard_normal(spec.input_shape)
    gp = rng.standard_normal((2, 3, spec.padded_height, spec.padded_width))
    folded = pad_adjoint(gp, spec)
    assert np.isclose((pad(x, spec) * gp).sum(), (x * folded).sum(), rtol=1e-12)
    np.testing.assert_allclose(folded, fold_padding(gp, spec), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ shapes, dtypes, batch
@pytest.mark.parametrize("algo", ALGOS + ["auto"])
def test_unbatched_and_empty_batch(algo, rng):
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    g = rng.standard_normal((4, 7, 6)).astype(np.float32)
    gx = convlab.conv2d_input((3, 7, 7), w, g, padding=(1, 0), algo=algo)
    assert gx.shape == (3, 7, 7) and gx.dtype == np.float32
    gw = convlab.conv2d_weight(rng.standard_normal((3, 7, 7)).astype(np.float32), w.shape, g,
                               padding=(1, 0), algo=algo)
    assert gw.shape == w.shape and gw.dtype == np.float32
    empty = np.zeros((0, 4, 7, 6), np.float32)
    assert convlab.conv2d_input((0, 3, 7, 7), w, empty, padding=(1, 0), algo=algo).shape == (
        0, 3, 7, 7)
    gw0 = convlab.conv2d_weight(np.zeros((0, 3, 7, 7), np.float32), w.shape, empty,
                                padding=(1, 0), algo=algo)
    assert gw0.shape == w.shape and not gw0.any()
    out = convlab.conv_transpose2d(np.zeros((0, 4, 5, 6), np.float32), w, algo=algo)
    assert out.shape == (0, 3, 7, 7)


def test_bias_gradient():
    g = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(convlab.conv2d_bias(g), g.sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(convlab.conv2d_bias(g[0]), g[0].sum(axis=(1, 2)))
    with pytest.raises(ValueError, match="Expected 3D"):
        convlab.conv2d_bias(g[0, 0])


def test_errors_say_what_was_wrong(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"grad_output has size \[2, 4, 5, 5\], but the "
                                         r"convolution of an input of size \[2, 3, 8, 8\].* "
                                         r"has an output of size \[2, 4, 6, 6\]"):
        convlab.conv2d_input((2, 3, 8, 8), w, g)
    with pytest.raises(TypeError, match="weight and grad_output must have the same dtype; got "
                                        "weight float32, grad_output float64"):
        convlab.conv2d_input((2, 3, 7, 7), w, g.astype(np.float64))
    with pytest.raises(TypeError, match="got grad_output of dtype int64"):
        convlab.conv2d_input((2, 3, 7, 7), w, g.astype(np.int64))
    with pytest.raises(ValueError, match="expected input\\[2, 2, 7, 7\\] to have 3 channels"):
        convlab.conv2d_input((2, 2, 7, 7), w, g)
    with pytest.raises(ValueError, match="unknown algo 'fast'"):  # before anything else
        convlab.conv2d_weight(None, None, None, algo="fast")
    with pytest.raises(TypeError, match="input_size must be a sequence of ints"):
        convlab.conv2d_input(7, w, g)


def test_transposed_errors_in_torchs_words(rng):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    cases = [
        (dict(output_padding=1), ValueError,
         "output padding must be smaller than either stride or dilation, but got "
         "output_padding_height: 1 output_padding_width: 1 stride_height: 1 stride_width: 1 "
         "dilation_height: 1 dilation_width: 1"),
        (dict(stride=2, output_padding=2), ValueError, "output_padding_height: 2"),
        (dict(padding="same"), TypeError,
         "conv_transpose2d(): argument 'padding' must be tuple of ints, not str"),
        (dict(padding=5), ValueError,
         "Given input size per channel: (5 x 5). Calculated output size per channel: "
         "(-3 x -3). Output size is too small"),
        (dict(padding=-1), ValueError, "negative padding is not supported"),
        (dict(groups=3), ValueError,
         "Given groups=3, expected weight to be divisible by 3 at dimension 0, but got weight "
         "of size [4, 2, 3, 3] instead"),
        (dict(stride=0), ValueError, "non-positive stride is not supported"),
        (dict(output_padding=-1), ValueError, "negative output_padding is not supported"),
        (dict(bias=np.zeros(3, np.float32)), ValueError,
         "Given transposed=1, weight of size [4, 2, 3, 3], expected bias to be 1-dimensional "
         "with 2 elements, but got bias of size [3] instead"),
    ]
    for kwargs, exc, words in cases:
        with pytest.raises(exc) as info:
            convlab.conv_transpose2d(x, w, **kwargs)
        assert words in str(info.value), (kwargs, str(info.value))
    with pytest.raises(ValueError, match=r"Given transposed=1, weight of size \[4, 2, 3, 3\], "
                                         r"expected input\[1, 3, 5, 5\] to have 4 channels, "
                                         r"but got 3 channels instead"):
        convlab.conv_transpose2d(x[:, :3], w)
    with pytest.raises(ValueError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input "
                                         r"to conv_transpose2d, but got input of size: \[4, 5\]"):
        convlab.conv_transpose2d(x[0, 0, :4], w)
    # output_padding below the dilation (but not the stride) is allowed
    assert convlab.conv_transpose2d(x, w, dilation=2, output_padding=1).shape == (1, 2, 10, 10)


# ------------------------------------------------------------------ non-finite values
@pytest.mark.parametrize("op", ["grad_input", "grad_weight"])
@pytest.mark.parametrize("algo", ALGOS)
def test_nonfinite_pattern_is_the_oracles_where_declared_exact(op, algo, rng):
    kern = kernels.get(algo, op)
    x = rng.standard_normal((2, 3, 7, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    spec = convlab.ConvSpec.from_shapes(x.shape, w.shape, stride=2, padding=1)
    g = rng.standard_normal(spec.output_shape)
    if op == "grad_input":
        w[1, 2, 0, 1], g[0, 3, 1, 1] = np.inf, np.nan
        got = convlab.conv2d_input(x.shape, w, g, stride=2, padding=1, algo=algo)
        with np.errstate(invalid="ignore"):
            want = conv2d_input_reference(g, w, spec)
    else:
        x[1, 0, 2, 3], g[0, 1, 2, 0] = np.inf, np.nan
        got = convlab.conv2d_weight(x, w.shape, g, stride=2, padding=1, algo=algo)
        from convlab.reference_backward import conv2d_weight_reference

        with np.errstate(invalid="ignore"):
            want = conv2d_weight_reference(x, g, spec)
    same = (np.array_equal(np.isnan(got), np.isnan(want))
            and np.array_equal(np.isposinf(got), np.isposinf(want)))
    if kern.nonfinite == "exact":
        assert same, f"{algo} {op} is declared exact"
    # auto gives the oracle's pattern whatever it picks
    if op == "grad_input":
        auto = convlab.conv2d_input(x.shape, w, g, stride=2, padding=1)
    else:
        auto = convlab.conv2d_weight(x, w.shape, g, stride=2, padding=1)
    assert np.array_equal(np.isnan(auto), np.isnan(want))


@pytest.mark.parametrize("algo", ALGOS)
def test_inf_at_a_row_end_reaches_only_its_windows(algo, rng):
    """im2col's flat rows run past each row's end (junk columns): a value there must not
    reach weights whose windows never read it (0 * Inf would be NaN)."""
    from convlab.reference_backward import conv2d_weight_reference

    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    x[0, 1, 2, 6] = np.inf  # the last column: a junk column's tap reads it
    spec = convlab.ConvSpec.from_shapes(x.shape, w.shape)
    g = rng.standard_normal(spec.output_shape)
    got = convlab.conv2d_weight(x, w.shape, g, algo=algo)
    with np.errstate(invalid="ignore"):
        want = conv2d_weight_reference(x, g, spec)
    assert np.isfinite(want[:, 1, :, :2]).all()  # taps q = 0, 1 never read column 6
    if kernels.get(algo, "grad_weight").nonfinite == "exact":
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert np.array_equal(np.isinf(got), np.isinf(want))


def test_a_plan_decides_under_the_cap_it_was_made_under():
    """The workspace cap is part of a plan's key, and each choice is decided under that
    cap even when it is first asked for outside it (Conv2d.backward reuses the forward's
    plan): im2col's grad_weight rule reads the cap."""
    spec = convlab.ConvSpec.from_shapes((8, 256, 14, 14), (512, 256, 3, 3), stride=2,
                                        padding=1)
    planmod.forget()
    with workspace_cap(1 << 20):
        small = planmod.plan(spec)
    assert small.choice("grad_weight").kernel.name == "parallel"  # decided outside
    big = planmod.plan(spec)
    assert big is not small and big.choice("grad_weight").kernel.name == "im2col"
    with workspace_cap(1 << 20):
        assert planmod.plan(spec) is small
        assert convlab.explain((8, 256, 14, 14), (512, 256, 3, 3), stride=2, padding=1,
                               op="grad_weight").kernel.name == "parallel"
    assert small.nonfinite().cap == small.cap == 1 << 20
