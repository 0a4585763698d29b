"""algo="auto": it only ever picks a kernel that can run the spec, it picks by the
documented rule (best rank among the eligible), and explain() says which and why."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import convlab
from convlab import kernels
from convlab.functional import prepare

from helpers import assert_matches_oracle, conv_cases, random_case


def _why_not(kern, spec):
    """The reason a kernel gives through its own hooks (None: it would run it)."""
    return kern.available() or kern.supports(spec) or kern.auto_when(spec)


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(max_channels=8))
def test_auto_only_picks_a_kernel_that_supports_the_spec(case):
    input_shape, weight_shape, args, dtype = case
    x, w, b = random_case(np.random.default_rng(2), input_shape, weight_shape, dtype)
    spec = prepare(x, w, b, **args)[3]
    choice = convlab.explain(x, w, b, **args)
    kern = choice.kernel
    assert _why_not(kern, spec) is None
    # everything ranked better was passed over, each with the reason its own hooks give
    better = [k.name for k in kernels.KERNELS.values()
              if k.auto_rank is not None and k.auto_rank < kern.auto_rank]
    assert sorted(name for name, _ in choice.passed_over) == sorted(better)
    for name, why in choice.passed_over:
        assert why and why == _why_not(kernels.get(name), spec)
    # and conv2d(algo="auto") runs it: the result meets that kernel's tolerance
    out = assert_matches_oracle(kern.name, x, w, b, **args)
    np.testing.assert_array_equal(convlab.conv2d(x, w, b, algo="auto", **args), out)


def test_explain_names_the_kernel_and_the_reason():
    # dilated 3x3 (no Winograd), 256 output channels, reduction 64*9: the GEMM route
    choice = convlab.explain((8, 64, 32, 32), (256, 64, 3, 3), padding=2, dilation=2)
    assert choice.kernel.name == "im2col"
    assert choice.reason == choice.kernel.description
    assert str(choice).startswith("auto picks 'im2col'")
    # grouped, thin: im2col declines and says why (its GEMM would be 16 x 144); parallel
    choice = convlab.explain((8, 32, 28, 28), (32, 16, 3, 3), padding=1, groups=2)
    assert choice.kernel.name == "parallel"
    reasons = dict(choice.passed_over)
    assert "16 x 144" in reasons["im2col"]
    assert "not 'im2col'" in str(choice)
    # depthwise: the depthwise kernel (the general ones waste its memory-bound work)
    choice = convlab.explain((8, 32, 28, 28), (32, 1, 3, 3), padding=1, groups=32)
    assert choice.kernel.name == "depthwise"
    # 64 output channels: a thin GEMM, the direct kernel
    choice = convlab.explain((8, 64, 30, 30), (64, 64, 3, 3), dilation=2)
    assert choice.kernel.name == "parallel" and "64 x 576" in dict(choice.passed_over)["im2col"]
    # strided, ungrouped and larger than 1x1 (a stem, a downsampling 3x3): banded, which
    # the stride-1 and 1x1 layers pass over, saying why
    choice = convlab.explain((8, 64, 30, 30), (64, 64, 5, 5), stride=2)
    assert choice.kernel.name == "banded"
    assert "strided layers" in dict(convlab.explain((8, 64, 30, 30), (64, 64, 3, 3),
                                                    dilation=2).passed_over)["banded"]
    # a plain 1x1 is a GEMM with nothing to lower: pointwise even for few channels, at
    # any stride; with padding it is not a plain GEMM any more
    assert convlab.explain((8, 32, 20, 20), (64, 32, 1, 1)).kernel.name == "pointwise"
    assert convlab.explain((8, 32, 20, 20), (64, 32, 1, 1), stride=2).kernel.name == "pointwise"
    assert convlab.explain((8, 32, 20, 20), (64, 32, 1, 1), padding=1).kernel.name != "pointwise"


def test_fast_kernels_are_ranked_below_naive():
    ranks = {name: kernels.get(name).auto_rank for name in ("im2col", "parallel", "naive")}
    assert ranks["im2col"] < ranks["parallel"] < ranks["naive"]
    assert ranks["im2col"] >= 20  # room below for Winograd


def test_choose_takes_the_best_ranked_kernel_that_accepts(monkeypatch):
    """The rule on stand-in kernels: ranks decide, a refusal by any hook passes a kernel
    over (with its words), unranked kernels are never picked, nothing left is an error."""
    import dataclasses

    base = kernels.get("naive")
    fakes = {
        "declines": dataclasses.replace(base, name="declines", auto_rank=1,
                                        auto_when=lambda s: "too small here"),
        "absent": dataclasses.replace(base, name="absent", auto_rank=2,
                                      available=lambda: "no such card"),
        "second": dataclasses.replace(base, name="second", auto_rank=5),
        "first": dataclasses.replace(base, name="first", auto_rank=3,
                                     supports=lambda s: None if s.groups == 1 else "no groups"),
        "unranked": dataclasses.replace(base, name="unranked", auto_rank=None),
    }
    monkeypatch.setattr(kernels.registry, "KERNELS", fakes)
    spec = convlab.ConvSpec.from_shapes((1, 4, 6, 6), (4, 4, 3, 3))
    choice = kernels.choose(spec)
    assert choice.kernel.name == "first"
    assert choice.passed_over == (("declines", "too small here"), ("absent", "no such card"))
    grouped = convlab.ConvSpec.from_shapes((1, 4, 6, 6), (4, 2, 3, 3), groups=2)
    assert kernels.choose(grouped).kernel.name == "second"
    assert dict(kernels.choose(grouped).passed_over)["first"] == "no groups"
    monkeypatch.setitem(fakes, "second", dataclasses.replace(fakes["second"], auto_rank=None))
    with pytest.raises(kernels.UnsupportedSpecError, match="no registered kernel can run"):
        kernels.choose(grouped)
