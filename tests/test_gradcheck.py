"""convlab.gradcheck: central differences agree with a right gradient, and catch a wrong
one, naming the worst element."""

import numpy as np
import pytest

import convlab


@pytest.fixture
def rng():
    return np.random.default_rng(30)


def _conv_fn(w, backward_kind="right"):
    def fn(x):
        out = convlab.conv2d(x, w, padding=1)

        def backward(g):
            if backward_kind == "right":
                return [convlab.conv2d_input(x.shape, w, g, padding=1)]
            # the classic bug: full correlation with the kernel NOT flipped
            gpad = np.pad(g, ((0, 0), (0, 0), (2, 2), (2, 2)))
            wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3))
            return [convlab.conv2d(gpad, wt)[:, :, 1:-1, 1:-1]]

        return out, backward

    return fn


def test_right_gradient_passes(rng):
    w = rng.standard_normal((3, 2, 3, 3))
    assert convlab.gradcheck(_conv_fn(w), (rng.standard_normal((1, 2, 4, 5)),))


def test_unflipped_kernel_fails_with_the_worst_element(rng):
    w = rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(convlab.GradcheckError, match="Jacobian mismatch for input 0") as info:
        convlab.gradcheck(_conv_fn(w, "unflipped"), (rng.standard_normal((1, 2, 4, 5)),))
    assert info.value.worst.excess > 1
    assert not convlab.gradcheck(_conv_fn(w, "unflipped"), (rng.standard_normal((1, 2, 4, 5)),),
                                 raise_exception=False)


def test_the_worst_element_is_where_the_error_is(rng):
    w = rng.standard_normal((2, 2, 3, 3))

    def fn(x):
        out, backward = _conv_fn(w)(x)

        def planted(g):
            gx = backward(g)[0].copy()
            gx[0, 1, 2, 3] += 0.5 * np.abs(g).sum()  # wrong at one input element
            return [gx]

        return out, planted

    with pytest.raises(convlab.GradcheckError) as info:
        convlab.gradcheck(fn, (rng.standard_normal((1, 2, 4, 5)),))
    assert info.value.worst.input_index == (0, 1, 2, 3)
    assert "element (0, 1, 2, 3)" in str(info.value)


def test_layers_need_float64_and_parameters_are_checked(rng):
    with pytest.raises(ValueError, match="gradcheck needs a float64 layer"):
        convlab.gradcheck(convlab.Conv2d(2, 3, 3), (rng.standard_normal((1, 2, 4, 4)),))
    layer = convlab.Conv2d(2, 3, 3, dtype=np.float64, seed=0)
    original = layer.backward

    def wrong_weight_grad(g):  # right input gradient, wrong weight gradient
        gx = original(g)
        layer.grad["weight"] *= 1.01
        return gx

    layer.backward = wrong_weight_grad
    with pytest.raises(convlab.GradcheckError, match="Jacobian mismatch for weight"):
        convlab.gradcheck(layer, (rng.standard_normal((1, 2, 4, 4)),))


def test_bad_settings(rng):
    with pytest.raises(ValueError, match="need eps > 0"):
        convlab.gradcheck(lambda x: (x, lambda g: [g]), (np.zeros(3),), eps=0)


@pytest.mark.parametrize("returns", ["output", "triple", "no_callable"])
def test_a_function_returning_only_its_output_is_told_what_gradcheck_expects(rng, returns):
    """torch's gradcheck takes a function of tensors and differentiates it by autograd;
    convlab has none, so fn must bring its own backward: the error says so."""
    x = rng.standard_normal((1, 1, 4, 4))
    w = rng.standard_normal((1, 1, 2, 2))

    def conv_only(x, w):
        out = convlab.conv2d(x, w)
        if returns == "output":
            return out
        if returns == "triple":
            return out, None, None
        return out, out

    with pytest.raises(TypeError) as err:
        convlab.gradcheck(conv_only, (x, w))
    msg = str(err.value)
    assert "fn(*inputs) to return (output, backward)" in msg
    assert "no autograd" in msg and "layer" in msg
    assert "conv_only returned" in msg


@pytest.mark.parametrize("where", [0, -1], ids=["first", "last"])
def test_a_gradient_that_is_none_for_some_output_elements_only_is_a_clear_error(rng, where):
    """None means "this input is not differentiated", so it must hold for every
    grad_output: a backward that returns None for some one-hot grad_outputs and an array
    for others gets a ValueError naming the input (neither the input silently left
    unchecked, nor an AttributeError from inside gradcheck)."""
    x = rng.standard_normal(4)

    def fn(x):
        def backward(g):  # the gradient of x * 2 w.r.t. x, but None for one output
            return [None if g[where] else 2 * g]

        return 2 * x, backward

    with pytest.raises(ValueError, match="None for input 0 for some grad_outputs"):
        convlab.gradcheck(fn, (x,))
