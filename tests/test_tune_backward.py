"""The tuner measures backward kernels too (grad_input and grad_weight, each alone, gated
against the float64 backward oracle before it is timed), remembers the winner per op, and
explain() says "measured" for it, naming the kernel that then runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convlab
from convlab import plan as planmod
from convlab import tuning
from convlab.kernels import registry
from convlab.reference_backward import conv2d_input_reference, conv2d_weight_reference
from convlab.shapes import ConvSpec


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "tuning.json"))
    planmod.forget()
    yield tuning.default_cache()
    planmod.forget()


def _spec():
    # non-square, asymmetric, strided: several backward kernels run it
    return ConvSpec.from_shapes((2, 6, 11, 9), (5, 6, 3, 2), stride=(2, 1), padding=(1, 0))


@pytest.mark.parametrize("op", ["grad_input", "grad_weight"])
def test_tune_measures_every_candidate_and_remembers_the_fastest(cache, op):
    spec = _spec()
    found = tuning.tune(spec, np.float32, op=op, repeats=2)
    names = {k.name for k in tuning.candidates(spec, op)}
    assert len(names) >= 2 and set(found.times) == names
    assert found.winner == min(found.times, key=found.times.__getitem__)
    assert found.winner in registry.kernels_for(op)
    again = tuning.lookup(spec, np.float32, op=op)
    assert again is not None and again.remembered and again.winner == found.winner
    # the forward's memory is another key: a backward winner never answers a forward
    assert tuning.lookup(spec, np.float32) is None
    assert f'"op": "{op}"' in tuning.key_for(spec, np.float32, op=op)


def test_a_wrong_backward_kernel_is_never_remembered(cache, monkeypatch):
    spec = _spec()
    good = registry.kernels_for("grad_input")["im2col"]

    def wrong(go, w, s):
        return good.run(go, w, s) * 1.01  # 1 % off: fails the gate

    broken = dataclasses.replace(good, name="broken", run=wrong)
    monkeypatch.setattr(tuning, "candidates", lambda s, op="forward": [broken, good])
    found = tuning.tune(spec, np.float32, op="grad_input", repeats=2)
    assert found.winner == "im2col" and "broken" not in found.times
    assert any(f.startswith("broken") for f in found.failed)


def test_explain_says_measured_and_names_what_runs(cache, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 11, 9)).astype(np.float32)
    w = rng.standard_normal((5, 6, 3, 2)).astype(np.float32)
    args = dict(stride=(2, 1), padding=(1, 0))
    before = convlab.explain(x, w, None, op="grad_input", **args)
    assert before.source != "measured"
    tuned = convlab.explain(x, w, None, op="grad_input", algo="tune", **args)
    assert tuned.source == "measured" and "measured" in str(tuned)
    # once measured, auto follows the measurement too, and that kernel is the one called
    after = convlab.explain(x, w, None, op="grad_input", **args)
    assert after.source == "measured" and after.kernel.name == tuned.kernel.name
    called = []
    real = registry.Kernel.grad

    def spy(self, a, b, spec, *transformed):
        called.append((self.op.value, self.name))
        return real(self, a, b, spec, *transformed)

    monkeypatch.setattr(registry.Kernel, "grad", spy)
    g = rng.standard_normal((2, 5, 6, 8)).astype(np.float32)
    gi = convlab.conv2d_input(x.shape, w, g, **args)
    assert called == [("grad_input", tuned.kernel.name)]
    spec = ConvSpec.from_shapes(x.shape, w.shape, **args)
    want = conv2d_input_reference(g.astype(np.float64), w.astype(np.float64), spec)
    assert np.allclose(gi, want, rtol=1e-4, atol=1e-4)


def test_conv2d_module_tunes_its_backward(cache):
    rng = np.random.default_rng(6)
    layer = convlab.Conv2d(6, 5, (3, 2), stride=(2, 1), padding=(1, 0), seed=1)
    layer.backward_algo = "tune"
    x = rng.standard_normal((2, 6, 11, 9)).astype(np.float32)
    out = layer(x)
    g = rng.standard_normal(out.shape).astype(np.float32)
    gx = layer.backward(g)
    spec = ConvSpec.from_shapes(x.shape, layer.weight.shape, stride=(2, 1), padding=(1, 0))
    x64, w64, g64 = (a.astype(np.float64) for a in (x, layer.weight, g))
    assert np.allclose(gx, conv2d_input_reference(g64, w64, spec), rtol=1e-4, atol=1e-4)
    assert np.allclose(layer.grad["weight"], conv2d_weight_reference(x64, g64, spec),
                       rtol=1e-4, atol=1e-3)
    for op in ("grad_input", "grad_weight"):
        assert tuning.lookup(spec, np.float32, op=op) is not None
        assert layer.explain(x, op=op).source == "measured"


def test_an_unknown_backward_name_still_fails_first():
    with pytest.raises(Exception, match="tunee|no .*kernel|unknown"):
        convlab.conv2d_input((1, 2, 5, 5), np.ones((3, 2, 3, 3), np.float32),
                             np.ones((1, 3, 3, 3), np.float32), algo="tunee")
