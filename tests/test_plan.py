"""The plan: one decision per call, remembered, and ``explain`` names the kernel that runs.

``explain`` and the calls that run kernels ask the same :class:`convlab.plan.Plan`; these
tests spy on the kernels that actually run (``Kernel.execute`` for forwards,
``Kernel.grad`` for gradients) and compare them with what ``explain`` says, for
``conv2d``, a ``Conv2d`` layer after tuning (whose measured winner differs from
``conv2d``'s), and the backward.  No timing assertions.
"""

from __future__ import annotations

import numpy as np
import pytest

import convlab
from convlab import plan as planning
from convlab import tuning
from convlab.kernels.registry import Kernel
from convlab.reference import conv2d_reference
from convlab.reference_backward import conv2d_input_reference, conv2d_weight_reference
from convlab.validate import kernel_spec, prepare


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "tuning.json"
    monkeypatch.setenv(tuning.CACHE_ENV, str(path))
    return path


@pytest.fixture
def ran(monkeypatch):
    """The (op, kernel name) of every kernel call, in order."""
    calls: list[tuple[str, str]] = []
    execute, grad = Kernel.execute, Kernel.grad

    def spy_execute(self, *args, **kwargs):
        calls.append((self.op, self.name))
        return execute(self, *args, **kwargs)

    def spy_grad(self, *args, **kwargs):
        calls.append((self.op, self.name))
        return grad(self, *args, **kwargs)

    monkeypatch.setattr(Kernel, "execute", spy_execute)
    monkeypatch.setattr(Kernel, "grad", spy_grad)
    return calls


def _entry(winner):
    return {"winner": winner, "times": {winner: 1e-3}, "date": "2026-01-02T03:04:05"}


def _arrays(rng, x_shape, w_shape, bias=True):
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    return x, w, b


CASES = [  # (x, w, conv args): non-square, asymmetric, every padding kind the rule sees
    ((2, 3, 9, 11), (5, 3, 3, 2), dict(padding=1)),
    ((1, 8, 7, 10), (8, 1, 3, 3), dict(padding=(1, 2), groups=8)),
    ((2, 4, 12, 9), (6, 4, 5, 3), dict(padding="same", padding_mode="reflect")),
    ((3, 40, 10, 13), (48, 40, 3, 3), dict(padding=1)),
    ((2, 6, 11, 8), (4, 6, 1, 1), dict(stride=(2, 1))),
]


@pytest.mark.parametrize("x_shape, w_shape, args", CASES)
def test_explain_names_the_kernel_conv2d_runs(ran, x_shape, w_shape, args):
    x, w, b = _arrays(np.random.default_rng(3), x_shape, w_shape)
    said = convlab.explain(x, w, b, **args).kernel.name
    out = convlab.conv2d(x, w, b, **args)
    assert ran == [("forward", said)]
    np.testing.assert_allclose(out, conv2d_reference(*prepare(x, w, b, **args)),
                               rtol=1e-4, atol=1e-4)


def test_explain_follows_nan_to_the_kernel_that_runs(ran, cache_file):
    """A measured Winograd winner spreads NaN/Inf unlike PyTorch: for an input holding Inf
    both explain and conv2d take the finite=False plan's kernel."""
    spec = kernel_spec(convlab.ConvSpec.from_shapes((1, 32, 8, 8), (32, 32, 3, 3), padding=1))
    tuning.default_cache().put(tuning.key_for(spec, np.float32), _entry("winograd_f4"))
    x, w, _ = _arrays(np.random.default_rng(1), (1, 32, 8, 8), (32, 32, 3, 3), bias=False)
    assert convlab.explain(x, w, padding=1).kernel.name == "winograd_f4"
    convlab.conv2d(x, w, padding=1)
    x[0, 3, 4, 4] = np.inf
    said = convlab.explain(x, w, padding=1).kernel
    convlab.conv2d(x, w, padding=1)
    assert said.nonfinite == "exact" and ran == [("forward", "winograd_f4"),
                                                 ("forward", said.name)]


def test_explain_names_what_a_tuned_Conv2d_runs(ran, cache_file):
    """The tuner remembers one winner per way a layer runs: Conv2d (weight transform kept)
    and conv2d (transformed on every call).  Stand-in winners that differ: the layer's
    explain, convlab.explain(cached=True) and its forward all say the layer's."""
    layer = convlab.Conv2d(6, 4, (3, 2), padding=(1, 0), seed=0)
    x = np.random.default_rng(2).standard_normal((2, 6, 9, 7)).astype(np.float32)
    spec = kernel_spec(convlab.ConvSpec.from_shapes(x.shape, layer.weight.shape,
                                                    padding=(1, 0)))
    cache = tuning.default_cache()
    cache.put(tuning.key_for(spec, np.float32, cached=True), _entry("im2col"))
    cache.put(tuning.key_for(spec, np.float32, cached=False), _entry("naive"))
    choice = layer.explain(x)
    assert choice.kernel.name == "im2col" and choice.source == "measured"
    assert convlab.explain(x, layer.weight, layer.bias, padding=(1, 0),
                           cached=True).kernel.name == "im2col"
    assert convlab.explain(x, layer.weight, layer.bias, padding=(1, 0)).kernel.name == "naive"
    layer(x)
    convlab.conv2d(x, layer.weight, layer.bias, padding=(1, 0))
    assert ran == [("forward", "im2col"), ("forward", "naive")]
    assert "im2col" in str(layer.plan(x)) and "weight transformed once" in str(layer.plan(x))


@pytest.mark.parametrize("backward_algo", ["auto", "naive"])
def test_explain_names_the_backward_kernels_that_run(ran, backward_algo):
    rng = np.random.default_rng(4)
    layer = convlab.Conv2d(5, 7, (2, 3), padding=(1, 2), stride=(1, 2),
                           padding_mode="circular", seed=1)
    layer.backward_algo = backward_algo
    x = rng.standard_normal((2, 5, 8, 11)).astype(np.float32)
    said = {op: layer.explain(x, op=op).kernel.name for op in ("grad_input", "grad_weight")}
    functional = {op: convlab.explain(x, layer.weight, padding=(1, 2), stride=(1, 2),
                                      padding_mode="circular", op=op,
                                      algo=backward_algo).kernel.name
                  for op in ("grad_input", "grad_weight")}
    assert said == functional
    out = layer(x)
    go = rng.standard_normal(out.shape).astype(np.float32)
    ran.clear()
    grad_x = layer.backward(go)
    grads = [r for r in ran if r[0] != "forward"]
    assert grads == [("grad_input", said["grad_input"]), ("grad_weight", said["grad_weight"])]
    # forward kernels run inside a backward only as polyphase's stride-1 sub-problems
    assert said["grad_input"] == "polyphase" or len(grads) == len(ran)
    if backward_algo == "naive":
        assert said == {"grad_input": "naive", "grad_weight": "naive"}
    # the plan and padded input handed over from the forward give the oracle's gradients
    spec = convlab.ConvSpec.from_shapes(x.shape, layer.weight.shape, padding=(1, 2),
                                        stride=(1, 2), padding_mode="circular")
    np.testing.assert_allclose(grad_x, conv2d_input_reference(go, layer.weight, spec),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grad["weight"], conv2d_weight_reference(x, go, spec),
                               rtol=1e-4, atol=1e-4)


def test_the_decision_is_made_once(monkeypatch):
    """Repeated auto calls ask the tuner's memory and the rule once, never stat() the
    tuning file per call, and reuse one validated spec."""
    asked = []
    choose = tuning.choose
    monkeypatch.setattr(tuning, "choose", lambda *a, **k: asked.append(a) or choose(*a, **k))
    stats = []
    stamp = tuning.TuningCache._file_stamp
    monkeypatch.setattr(tuning.TuningCache, "_file_stamp",
                        lambda self: stats.append(1) or stamp(self))
    planning.forget()
    x, w, b = _arrays(np.random.default_rng(5), (1, 3, 7, 6), (2, 3, 3, 3))
    layer = convlab.Conv2d(3, 2, 3, seed=0)

    def calls(rounds):
        for _ in range(rounds):
            convlab.conv2d(x, w, b)
            layer(x)
            layer.backward(np.ones((1, 2, 5, 4), np.float32))

    calls(1)  # first calls: compiles, and one decision per plan and op
    # conv2d's forward, the layer's (weight cache), and the layer's two gradients (the
    # tuner's memory may hold measured backward kernels too): one each
    ops = sorted(str(a[4]) for a in asked)  # choose(spec, dtype, finite, cached, op)
    assert ops == ["forward", "forward", "grad_input", "grad_weight"], asked
    asked.clear(), stats.clear()
    # the file is looked at most once per REFRESH_S: made an hour here, so that a busy
    # machine (20 rounds taking over a second) cannot make this test flaky
    monkeypatch.setattr(tuning, "REFRESH_S", 3600.0)
    calls(20)
    assert asked == [] and len(stats) <= 1  # at most one look at the file


def test_plans_are_dropped_when_the_tuning_memory_changes(cache_file):
    x, w, _ = _arrays(np.random.default_rng(6), (1, 4, 9, 9), (4, 4, 3, 3), bias=False)
    spec = kernel_spec(convlab.ConvSpec.from_shapes(x.shape, w.shape))
    before = convlab.explain(x, w)
    assert before.source == "rule"
    tuning.default_cache().put(tuning.key_for(spec, np.float32), _entry("naive"))
    after = convlab.explain(x, w)
    assert after.source == "measured" and after.kernel.name == "naive"
    tuning.default_cache().clear()
    assert convlab.explain(x, w).source == "rule"


def test_a_named_kernel_is_planned_as_named_and_checked():
    spec = convlab.ConvSpec.from_shapes((1, 2, 6, 6), (2, 2, 3, 3), stride=2)
    p = planning.plan(spec, np.float32, "naive", backward_algo="naive")
    assert p.forward.source == "named" and p.forward.kernel.name == "naive"
    assert p.grad_weight.kernel.op == "grad_weight"
    with pytest.raises(convlab.kernels.UnsupportedSpecError, match="winograd_f4"):
        planning.plan(spec, np.float32, "winograd_f4").choice("forward")
    with pytest.raises(ValueError, match="unknown op"):
        p.choice("sideways")


def test_backward_reuses_the_forwards_spec_plan_and_padded_input(monkeypatch):
    """Conv2d.backward builds no ConvSpec, does not pad the input again and asks for no
    plan: the forward handed it all (and the gradients still match the oracle's)."""
    from convlab import padding, shapes

    rng = np.random.default_rng(7)
    layer = convlab.Conv2d(3, 4, (3, 2), padding=(2, 1), padding_mode="reflect", seed=2)
    x = rng.standard_normal((2, 3, 8, 7)).astype(np.float32)
    out = layer(x)
    go = rng.standard_normal(out.shape).astype(np.float32)
    built, padded, planned = [], [], []
    from_shapes, pad, make_plan = shapes.ConvSpec.from_shapes, padding.pad, planning.plan
    monkeypatch.setattr(shapes.ConvSpec, "from_shapes",
                        classmethod(lambda cls, *a, **k: built.append(a) or from_shapes(*a, **k)))
    monkeypatch.setattr(padding, "pad",
                        lambda a, *r, **k: padded.append(np.shape(a)) or pad(a, *r, **k))
    monkeypatch.setattr(planning, "plan", lambda *a, **k: planned.append(1) or make_plan(*a, **k))
    grad_x = layer.backward(go)
    # (pad_adjoint pads an index grid of one channel to fold the gradient back: not x)
    assert built == [] and planned == [] and x.shape not in padded
    spec = convlab.ConvSpec.from_shapes(x.shape, layer.weight.shape, padding=(2, 1),
                                        padding_mode="reflect")
    np.testing.assert_allclose(grad_x, conv2d_input_reference(go, layer.weight, spec),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grad["weight"], conv2d_weight_reference(x, go, spec),
                               rtol=1e-4, atol=1e-4)
