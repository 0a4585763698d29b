"""convlab called from several Python threads: never a wrong answer, never a crash.

docs/design.md ("Concurrency") says what may run at once: every kernel may be called
from several threads; a shared ``Conv2d`` whose weight another thread edits gives,
once the edits stop, exactly the oracle's answer for the final weight (its weight
cache never serves a transform of other bits); under Numba's ``workqueue`` threading
layer, which is not thread-safe, convlab serialises its parallel regions instead of
letting the process abort.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import prepare
from convlab.reference import compare, conv2d_reference

from helpers import cpu_kernel_names

ROOT = Path(__file__).resolve().parent.parent


def _check_final(layer: convlab.Conv2d, x: np.ndarray, algo: str) -> None:
    xa, wa, ba, spec = prepare(x, layer.weight, layer.bias, layer.stride, layer.padding,
                               layer.dilation, layer.groups, layer.padding_mode)
    expected = conv2d_reference(xa, wa, ba, spec)
    tol = kernels.get(algo).tolerance(spec, np.float32)
    report = compare(layer(x), expected, tol)
    assert report.ok, f"{algo} after the edits stopped: {report}"


def _hammer(layer: convlab.Conv2d, x: np.ndarray, weights: list[np.ndarray], edits: int,
            readers: int = 3, pause: float = 0.0) -> list[BaseException]:
    """``readers`` threads call ``layer(x)`` while one thread writes ``weights`` into
    ``layer.weight`` in place, ``edits`` times, ``pause`` seconds apart (so the edits
    land while the readers are busy); returns what the threads raised."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                layer(x)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    def write() -> None:
        try:
            for i in range(edits):
                if pause:
                    time.sleep(pause)
                layer.weight[...] = weights[i % len(weights)]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=read) for _ in range(readers)]
    threads.append(threading.Thread(target=write))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


@pytest.mark.parametrize("algo", ["winograd_f4", "auto"])
def test_shared_layer_never_keeps_a_stale_winograd_filter(algo):
    """The reproducer: 3 threads call one Conv2d while a 4th toggles its weight between
    two arrays; once it stops, the layer must compute with the final weight.  (Before,
    the filter transform of a half-written or old weight was filed under the new bits
    and served forever.)"""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 12, 12)).astype(np.float32)
    wrong, trials = 0, 20
    for trial in range(trials):
        layer = convlab.Conv2d(64, 64, 3, padding=1, algo=algo, seed=trial)
        weights = [layer.weight.copy(), rng.standard_normal(layer.weight.shape)
                   .astype(np.float32)]
        if algo == "auto":
            assert convlab.explain(x, layer.weight, padding=1).kernel.name.startswith(
                "winograd")
        errors = _hammer(layer, x, weights, edits=31)
        assert not errors, errors
        xa, wa, ba, spec = prepare(x, layer.weight, layer.bias, padding=1)
        report = compare(layer(x), conv2d_reference(xa, wa, ba, spec),
                         kernels.get("winograd_f4").tolerance(spec, np.float32))
        wrong += not report.ok
    assert wrong == 0, f"{wrong} of {trials} trials kept a stale filter"


def test_weight_cache_keeps_a_transform_under_exactly_the_bits_transformed():
    """The same race, made deterministic: the weight changes while it is being
    transformed (as another thread's write would).  The cache must not serve that
    transform for the new weight, now or later."""
    import dataclasses

    from convlab.functional import WeightCache

    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    w_new = rng.standard_normal(w.shape).astype(np.float32)
    spec = convlab.ConvSpec.from_shapes((1, 6, 9, 9), w.shape, padding=1)
    real = kernels.get("winograd_f4")
    edited = []

    def transform_during_a_write(weight, spec):
        u = real.transform_weight(weight, spec)
        if not edited:  # the first transform: another thread writes the weight meanwhile
            w[...] = w_new
            edited.append(True)
        return u

    kern = dataclasses.replace(real, transform_weight=transform_during_a_write)
    cache = WeightCache()
    cache.get(kern, w, spec)
    for _ in range(2):  # the weight is w_new now: its transform, every time
        np.testing.assert_array_equal(cache.get(kern, w, spec),
                                      real.transform_weight(w_new, spec))


@pytest.mark.parametrize("algo", cpu_kernel_names())
def test_every_cpu_kernel_from_threads_with_weight_edits(algo):
    """Several threads, one shared layer, its weight edited meanwhile: no exception, no
    crash, and after the edits the oracle's answer (grouped and strided, so every
    kernel takes its less common paths)."""
    rng = np.random.default_rng(1)
    kern = kernels.get(algo)
    # grouped 3x3; a depthwise-only kernel: a depthwise layer, channel multiplier 2; a
    # 1x1-only kernel (pointwise): an ungrouped, unpadded 1x1 layer
    size, padding, groups, out_channels = next(
        case for case in ((3, 1, 2, 12), (3, 1, 8, 16), (1, 0, 1, 12))
        if kern.supports(convlab.ConvSpec.create((2, 8, 9, 7), case[3], case[0],
                                                 padding=case[1], groups=case[2])) is None)
    stride = (2, 1) if kern.supports(convlab.ConvSpec.create(
        (2, 8, 9, 7), out_channels, size, (2, 1), padding, groups=groups)) is None else 1
    layer = convlab.Conv2d(8, out_channels, size, stride=stride, padding=padding,
                           groups=groups, algo=algo, seed=3)
    x = rng.standard_normal((2, 8, 9, 7)).astype(np.float32)
    weights = [rng.standard_normal(layer.weight.shape).astype(np.float32) for _ in range(2)]
    errors = _hammer(layer, x, weights, edits=20)
    assert not errors, errors
    _check_final(layer, x, algo)


def test_threads_give_the_same_answers_as_one_thread():
    """Different layers in different threads at once (Winograd's scratch is per thread,
    im2col's cap per context): each result equals the one computed alone."""
    rng = np.random.default_rng(2)
    cases = []
    for algo in ("winograd_f2", "winograd_f4", "im2col", "parallel", "naive"):
        x = rng.standard_normal((2, 33, 10, 9)).astype(np.float32)
        w = rng.standard_normal((17, 33, 3, 3)).astype(np.float32)
        cases.append((algo, x, w, convlab.conv2d(x, w, padding=1, algo=algo)))
    results: dict[int, list[bool]] = {}

    def run(i: int) -> None:
        algo, x, w, alone = cases[i % len(cases)]
        results[i] = [np.array_equal(convlab.conv2d(x, w, padding=1, algo=algo), alone)
                      for _ in range(5)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2 * len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(all(v) for v in results.values()) and len(results) == 2 * len(cases)


WORKQUEUE_SCRIPT = """
import threading, numpy as np, convlab
from convlab.functional import prepare
from convlab.reference import conv2d_reference
from convlab.system import threading_layer
assert threading_layer() == "workqueue", threading_layer()
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 32, 14, 14)).astype(np.float32)
w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
dw = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
jobs = [("parallel", w, 1), ("winograd_f4", w, 1), ("im2col", dw, 32), ("parallel", dw, 32)]
bad = []
def run(algo, weight, groups):
    layer = convlab.Conv2d(32, 32, 3, padding=1, groups=groups, algo=algo)
    layer.weight[...] = weight
    for _ in range(8):
        layer.weight[...] += 0.0  # a fresh Winograd filter transform now and then
        out = layer(x)
        xa, wa, ba, spec = prepare(x, layer.weight, layer.bias, padding=1, groups=groups)
        if not np.allclose(out, conv2d_reference(xa, wa, ba, spec), atol=1e-3):
            bad.append(algo)
threads = [threading.Thread(target=run, args=jobs[i % len(jobs)]) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print("bad", bad)
assert not bad
print("ok")
"""


def test_workqueue_layer_serialises_instead_of_aborting():
    """With NUMBA_THREADING_LAYER=workqueue, parallel kernels called from several Python
    threads used to abort the process ("Concurrent access has been detected")."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    proc = subprocess.run([sys.executable, "-c", WORKQUEUE_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert proc.stdout.strip().endswith("ok")


def test_info_names_the_threading_layer_and_what_it_means(capsys):
    from convlab.cli import main
    from convlab.threads import threading_layer

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"threading layer: {threading_layer()}" in out
    assert "Python threads" in out
