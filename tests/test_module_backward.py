"""Conv2d learns: backward returns the gradient for the last forward's input and adds the
parameters' gradients into layer.grad (state_dict's keys); zero_grad; one backward per
forward; what was saved cannot be changed afterwards."""

import numpy as np
import pytest

import convlab
from convlab.reference_backward import conv2d_input_reference, conv2d_weight_reference


@pytest.fixture
def rng():
    return np.random.default_rng(20)


def _layer(**kw):
    args = dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=(2, 1),
                padding=(1, 2), dtype=np.float64, seed=0)
    args.update(kw)
    return convlab.Conv2d(**args)


def test_backward_returns_grad_input_and_fills_grad(rng):
    layer = _layer(padding_mode="reflect")
    x = rng.standard_normal((2, 3, 7, 6))
    out = layer(x)
    g = rng.standard_normal(out.shape)
    spec = convlab.ConvSpec.from_shapes(x.shape, layer.weight.shape, (2, 1), (1, 2),
                                        padding_mode="reflect")
    gx = layer.backward(g)
    np.testing.assert_allclose(gx, conv2d_input_reference(g, layer.weight, spec), atol=1e-12)
    np.testing.assert_allclose(layer.grad["weight"], conv2d_weight_reference(x, g, spec),
                               atol=1e-12)
    np.testing.assert_allclose(layer.grad["bias"], g.sum(axis=(0, 2, 3)), atol=1e-12)
    assert list(layer.grad) == list(layer.state_dict()) == ["weight", "bias"]
    assert list(_layer(bias=False).grad) == ["weight"]


def test_gradients_accumulate_until_zero_grad(rng):
    layer = _layer()
    x = rng.standard_normal((2, 3, 7, 6))
    g = rng.standard_normal(layer(x).shape)
    layer.backward(g)
    once = {k: v.copy() for k, v in layer.grad.items()}
    held = layer.grad["weight"]
    layer(x)
    layer.backward(g)
    for k in once:
        np.testing.assert_allclose(layer.grad[k], 2 * once[k], atol=1e-12)
    layer.zero_grad()
    assert layer.grad["weight"] is held and not held.any()  # in place
    assert not layer.grad["bias"].any()


def test_one_backward_per_forward(rng):
    layer = _layer()
    with pytest.raises(RuntimeError, match=r"Conv2d.backward\(\) needs a forward\(\) first"):
        layer.backward(np.zeros((2, 4, 4, 9)))
    x = rng.standard_normal((2, 3, 7, 6))
    g = rng.standard_normal(layer(x).shape)
    layer.backward(g)
    with pytest.raises(RuntimeError, match="a second backward without a new forward"):
        layer.backward(g)


def test_backward_uses_the_forwards_input_and_weight(rng):
    layer = _layer()
    x = rng.standard_normal((2, 3, 7, 6))
    out = layer(x)
    g = rng.standard_normal(out.shape)
    want_x = conv2d_input_reference(g, layer.weight.copy(), convlab.ConvSpec.from_shapes(
        x.shape, layer.weight.shape, (2, 1), (1, 2)))
    want_w = convlab.conv2d_weight(x.copy(), layer.weight.shape, g, (2, 1), (1, 2))
    x += 1.0  # the caller changes the input in place, and steps the weight
    layer.weight -= 0.1
    np.testing.assert_allclose(layer.backward(g), want_x, atol=1e-12)
    np.testing.assert_allclose(layer.grad["weight"], want_w, atol=1e-12)


def test_a_transformed_weight_is_saved_as_the_caches_key_and_others_as_copies(rng):
    """A forward whose kernel transformed the weight (Winograd) saves the weight cache's
    read-only key, the bits it computed with, shared while the weight keeps its bits; an
    in-place write, even 0.0 -> -0.0, makes a new key; a kernel without a transform
    saves a copy; a key left by a no_grad forward is never saved by a later forward
    whose kernel has no transform; a write after the forward does not reach its
    backward."""
    layer = convlab.Conv2d(32, 40, 3, padding=1, dtype=np.float64, seed=0,
                           algo="winograd_f2")
    layer.weight[0, 0, 0, 0] = 0.0
    x = rng.standard_normal((1, 32, 6, 5))
    layer(x)
    first = layer._saved.weight
    assert not first.flags.writeable and first is not layer.weight
    assert first is layer._weight_cache._entries[("forward", "winograd_f2")][0]
    layer(x)
    assert layer._saved.weight is first
    layer.weight[0, 0, 0, 0] = -0.0  # the same value, other bits
    out = layer(x)
    second = layer._saved.weight
    assert second is not first and np.signbit(second[0, 0, 0, 0])
    g = rng.standard_normal(out.shape)
    seen = layer.weight.copy()
    layer.weight += 0.5  # after the forward: not what its backward differentiates
    spec = convlab.ConvSpec.from_shapes(x.shape, seen.shape, padding=1)
    np.testing.assert_allclose(layer.backward(g), conv2d_input_reference(g, seen, spec),
                               atol=1e-12)
    with convlab.no_grad():
        layer(x)  # leaves this thread's key for the weight as it is now
    layer.weight -= 0.25
    layer.algo = "parallel"  # no transform: the forward must copy the new weight
    layer(x)
    assert layer._saved.weight.flags.writeable
    np.testing.assert_array_equal(layer._saved.weight, layer.weight)
    assert layer._saved.weight is not layer.weight


def test_grad_output_shape_and_dtype(rng):
    layer = _layer(dtype=np.float32)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)  # unbatched
    out = layer(x)
    with pytest.raises(ValueError, match=r"Mismatch in shape: grad_output has a shape of "
                                         r"\(4, 4, 8\) and output has a shape of \(4, 4, 9\)"):
        layer.backward(np.zeros((4, 4, 8)))
    gx = layer.backward(rng.standard_normal(out.shape))  # float64: cast, as autograd does
    assert gx.shape == x.shape and gx.dtype == np.float32
    assert layer.grad["weight"].dtype == np.float32


def test_backward_algo_is_used(rng):
    layer = _layer()
    layer.backward_algo = "winograd_f4"  # a forward kernel only: no such backward
    g = rng.standard_normal(layer(rng.standard_normal((1, 3, 7, 6))).shape)
    with pytest.raises(ValueError, match="unknown algo 'winograd_f4' for grad_input"):
        layer.backward(g)


@pytest.mark.parametrize("kw", [dict(), dict(padding_mode="circular", groups=3, in_channels=3,
                                             out_channels=6),
                                dict(padding="same", stride=1, dilation=(2, 1),
                                     padding_mode="replicate")])
def test_gradcheck_passes_for_the_layer(kw, rng):
    layer = _layer(**kw)
    assert convlab.gradcheck(layer, (rng.standard_normal((1, 3, 5, 4)),))
    assert not layer.grad["weight"].any()  # gradcheck leaves the gradients as it found them


def test_pickled_and_copied_layers_leave_the_learning_state_behind(rng):
    import copy
    import pickle

    layer = _layer()
    x = rng.standard_normal((2, 3, 7, 6))
    layer.backward(rng.standard_normal(layer(x).shape))
    layer(x)  # a forward waiting for its backward
    assert len(pickle.dumps(layer)) < 1.5 * (layer.weight.nbytes + layer.bias.nbytes) + 2000
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert {k: v.shape for k, v in clone.grad.items()} == {"weight": (4, 3, 3, 2),
                                                               "bias": (4,)}
        assert not any(v.any() for v in clone.grad.values())
        with pytest.raises(RuntimeError, match="needs a forward"):
            clone.backward(np.zeros((2, 4, 4, 9)))
        g = rng.standard_normal(clone(x).shape)
        np.testing.assert_allclose(clone.backward(g), convlab.conv2d_input(
            x.shape, layer.weight, g, (2, 1), (1, 2)), atol=1e-12)


def test_no_grad_forwards_save_nothing():
    """Inference does not pay for the backward's copy of the input, and a backward after
    it says why it cannot run; the switch is per context and restored after the block."""
    import tracemalloc

    layer = convlab.Conv2d(8, 8, 3, padding=1, algo="parallel", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 8, 32, 32)).astype(np.float32)

    def kept_by_a_forward() -> int:
        """Bytes still held after a forward whose output is dropped."""
        layer._saved = None
        tracemalloc.start()
        try:
            layer(x)
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    layer(x)  # compile; a normal forward saves
    assert layer._saved is not None
    saving = kept_by_a_forward()
    with convlab.no_grad():
        lean = kept_by_a_forward()
        assert layer._saved is None
        with pytest.raises(RuntimeError, match="no_grad"):
            layer.backward(np.ones((4, 8, 32, 32), np.float32))
    assert saving - lean >= x.nbytes  # the copy of the input is what no_grad saves
    layer(x)
    assert layer._saved is not None  # outside the block forwards save again


# ------------------------------------------------------------------ the kept grad_input transform
def _polyphase_layer():
    """A 3x3 stride-1 layer whose grad_input runs polyphase's Winograd F(4,3) sub-problem
    (named: auto leaves so few tiles to parallel), float64 so the oracle decides."""
    layer = convlab.Conv2d(40, 36, 3, padding=(1, 2), dtype=np.float64, seed=3)
    layer.backward_algo = "polyphase"
    return layer


def _input_grad_ok(layer, x, g):
    """The layer's grad_input for its last forward equals the float64 oracle's for the
    weight that forward used (the layer's current weight)."""
    from convlab.reference import compare

    spec = convlab.ConvSpec.from_shapes(x.shape, layer.weight.shape, padding=(1, 2))
    expected = conv2d_input_reference(g, layer.weight.copy(), spec)
    tol = convlab.kernels.get("polyphase", "grad_input").tolerance(spec, np.float64)
    report = compare(layer.backward(g), expected, tol)
    assert report.ok, report


def _count_transforms(monkeypatch):
    """Counts of polyphase's weight transforms (transform_weight_grad_input's calls) and
    of its flipped sub-kernels built (one per phase per transform, or per uncached call)."""
    from convlab.kernels import polyphase_backward as pb

    counts = {"transform": 0, "flipped": 0}
    phases, sub_weight = pb.phases, pb._sub_weight

    def counting_phases(*args, **kw):
        counts["transform"] += bool(kw.get("transform"))
        return phases(*args, **kw)

    def counting_sub_weight(*args, **kw):
        counts["flipped"] += 1
        return sub_weight(*args, **kw)

    monkeypatch.setattr(pb, "phases", counting_phases)
    monkeypatch.setattr(pb, "_sub_weight", counting_sub_weight)
    return counts


def test_backward_transforms_the_flipped_weight_once_while_it_does_not_change(monkeypatch):
    layer = _polyphase_layer()
    kern = convlab.kernels.get("polyphase", "grad_input")
    counts = _count_transforms(monkeypatch)
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 40, 13, 10))
    for step in range(3):  # forward, backward, with the same weight each time
        g = rng.standard_normal(layer(x).shape)
        _input_grad_ok(layer, x, g)
        kept = layer._weight_cache.kept(kern)
        if step == 0:
            first = kept
            assert [p.kernel.name for p in kept] == ["winograd_f4"]
            assert kept[0].transformed is not None  # Winograd's U of the flipped weight
        assert kept is first  # reused, not rebuilt
    assert counts == {"transform": 1, "flipped": 1}


def test_backward_after_an_in_place_update_uses_the_new_weight(monkeypatch):
    """An optimizer step writes the weight in place: the kept transform of the old weight
    must not be used (it would give a wrong gradient, silently)."""
    layer = _polyphase_layer()
    kern = convlab.kernels.get("polyphase", "grad_input")
    counts = _count_transforms(monkeypatch)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((3, 40, 13, 10))
    g = rng.standard_normal(layer(x).shape)
    _input_grad_ok(layer, x, g)
    old = layer._weight_cache.kept(kern)
    layer.weight -= 0.5 * layer.grad["weight"]  # SGD, in place
    layer.zero_grad()
    g = rng.standard_normal(layer(x).shape)
    _input_grad_ok(layer, x, g)
    assert layer._weight_cache.kept(kern) is not old and counts["transform"] == 2
    layer.weight[1, 2, 0, 1] = -7.0  # one element, through the array itself
    g = rng.standard_normal(layer(x).shape)
    _input_grad_ok(layer, x, g)
    layer.load_state_dict({"weight": rng.standard_normal(layer.weight.shape),
                           "bias": layer.bias})
    g = rng.standard_normal(layer(x).shape)
    _input_grad_ok(layer, x, g)
    assert counts["transform"] == 4


def test_backward_differentiates_the_forwards_weight_with_a_kept_transform():
    """The weight written between forward and backward: the backward still uses the
    forward's weight (the saved copy), and the kept transform is of that weight."""
    layer = _polyphase_layer()
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 40, 13, 10))
    g = rng.standard_normal(layer(x).shape)
    layer.backward(g)  # a transform is kept for this weight
    w_forward = layer.weight.copy()
    out = layer(x)
    layer.weight += 1.0  # after the forward: not what backward differentiates
    spec = convlab.ConvSpec.from_shapes(x.shape, w_forward.shape, padding=(1, 2))
    expected = conv2d_input_reference(g, w_forward, spec)
    np.testing.assert_allclose(layer.backward(np.ascontiguousarray(g.reshape(out.shape))),
                               expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_no_grad_keeps_no_backward_transform():
    layer = _polyphase_layer()
    kern = convlab.kernels.get("polyphase", "grad_input")
    x = np.random.default_rng(24).standard_normal((3, 40, 13, 10))
    with convlab.no_grad():
        layer(x)
        layer(x)
    assert layer._saved is None and layer._weight_cache.kept(kern) is None


def test_conv_transpose2d_layer_keeps_its_grad_input_transform(monkeypatch):
    """ConvTranspose2d's forward is a grad_input kernel: its transform is kept between
    forwards and rebuilt after the weight changes in place (float64 oracle)."""
    from convlab.reference import compare

    layer = convlab.ConvTranspose2d(36, 40, 3, padding=(1, 0), dtype=np.float64, seed=4,
                                    algo="polyphase")
    kern = convlab.kernels.get("polyphase", "grad_input")
    counts = _count_transforms(monkeypatch)
    rng = np.random.default_rng(25)
    x = rng.standard_normal((3, 36, 13, 14))
    fspec = convlab.ConvSpec.from_shapes((3, 40, 13, 16), layer.weight.shape, padding=(1, 0))

    def check():
        expected = (conv2d_input_reference(x, layer.weight.copy(), fspec)
                    + layer.bias[None, :, None, None])
        report = compare(layer(x), expected, kern.tolerance(fspec, np.float64))
        assert report.ok, report

    check()
    first = layer._weight_cache.kept(kern)
    assert [p.kernel.name for p in first] == ["winograd_f4"]
    check()
    assert layer._weight_cache.kept(kern) is first and counts["transform"] == 1
    layer.weight *= 1.5  # in place
    check()
    assert layer._weight_cache.kept(kern) is not first and counts["transform"] == 2
