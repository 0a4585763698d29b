"""The error study: plain data, every number under its kernel's registry tolerance, and
the ordering the docs state (bigger Winograd tiles, bigger errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convlab import kernels, numerics


@pytest.fixture(scope="module")
def rows():
    return numerics.error_study(channels=(1, 8, 64, 160), seeds=(0, 1))


def test_rows_are_plain_data(rows):
    keys = {"algo", "dtype", "channels", "seed", "reduction", "max_abs", "max_rel",
            "tolerance", "ok", "vs_direct"}
    assert len(rows) == 4 * 2 * 4 * 2  # algos x dtypes x channel counts x seeds
    for row in rows:
        assert set(row) == keys
        assert isinstance(row["algo"], str) and row["dtype"] in ("float32", "float64")
        assert row["reduction"] == 9 * row["channels"]
        assert math.isfinite(row["max_abs"]) and row["max_abs"] > 0


def test_every_error_is_under_the_registry_tolerance(rows):
    for row in rows:
        assert row["ok"], row
        assert row["max_rel"] <= row["tolerance"], row
        # the tolerance is the registry's rule, not something the study made up
        spec_red = row["reduction"]
        kern = kernels.get(row["algo"])
        expected = kern.rtol * max(1.0, math.sqrt(spec_red / 576))
        if row["dtype"] == "float64":
            expected *= 1e-8
        assert row["tolerance"] == pytest.approx(expected)


def test_registry_rtol_keeps_a_margin_over_the_measurements(rows):
    for algo in numerics.DEFAULT_ALGOS:
        measured = numerics.suggest_rtol(rows, algo, margin=1.0)
        assert 3 * measured <= kernels.get(algo).rtol, algo


def test_bigger_tiles_round_more(rows):
    worst = {(r["algo"], r["dtype"]): 0.0 for r in rows}
    for r in rows:
        key = (r["algo"], r["dtype"])
        worst[key] = max(worst[key], r["max_rel"])
    for dtype in ("float32", "float64"):
        f2, f4, f6 = (worst[(a, dtype)] for a in ("winograd_f2", "winograd_f4", "winograd_f6"))
        assert f2 < f4 < f6, dtype
        assert f4 > 2 * worst[("naive", dtype)]


def test_summarize_keeps_the_worst_seed(rows):
    summary = numerics.summarize(rows)
    assert len(summary) == 4 * 2 * 4
    for s in summary:
        same = [r["max_rel"] for r in rows if (r["algo"], r["dtype"], r["channels"])
                == (s["algo"], s["dtype"], s["channels"])]
        assert s["max_rel"] == max(same)


def test_nan_footprint_direct_is_the_3x3_window():
    got = numerics.nan_footprint("naive", size=(7, 9), where=(3, 0))
    expected = np.zeros((7, 9), bool)
    expected[2:5, 0:2] = True
    np.testing.assert_array_equal(got, expected)
