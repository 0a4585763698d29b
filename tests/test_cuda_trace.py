"""The per-thread memory tracer: counts, every check on a planted bug, convlab's kernels.

The tracer drives Numba's simulator classes itself, so these run in this process
(where numba was imported without NUMBA_ENABLE_CUDASIM); tests/cuda_trace_cases.py
runs the tracer again with the simulator switched on, as notebook 07 and the
exercise checks use it.  Launches are tiny (the simulator runs a Python thread per
CUDA thread).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import cuda

from convlab import ConvSpec
from convlab.cuda_trace import TraceLimitError, expected_reads, trace, trace_spec
from convlab.functional import prepare
from convlab.kernels import cuda as ck
from convlab.reference import conv2d_reference

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ planted kernels
@cuda.jit
def copy_twice(src, dst):
    i = cuda.grid(1)
    if i < dst.size:
        dst[i] = src[i] + src[i // 2]


@cuda.jit
def unguarded(src, dst):
    i = cuda.grid(1)  # no `if i < dst.size`: the last block's spare threads run off the end
    dst[i] = src[i]


@cuda.jit
def left_neighbour(src, dst):
    i = cuda.grid(1)
    if i < dst.size:
        dst[i] = src[i - 1] + src[i]  # thread 0 reads src[-1]: wraps to the last element


@cuda.jit
def halves(src, dst):
    i = cuda.grid(1)
    if i < src.size:
        dst[i // 2] = src[i]  # threads 2m and 2m+1 both write dst[m]


@cuda.jit
def block_sums(src, dst):
    i = cuda.grid(1)
    if i < src.size:
        dst[cuda.threadIdx.x] = src[i]  # every block writes dst[0:blockDim]


@cuda.jit
def rotate(src, dst, sync_before, sync_after):
    s = cuda.shared.array(8, np.float64)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    acc = 0.0
    for rep in range(2):
        s[t] = src[i] * (rep + 1)
        if sync_before:
            cuda.syncthreads()
        acc += s[(t + 1) % 8]  # the neighbour's value: needs the barrier above
        if sync_after:
            cuda.syncthreads()  # ... and this one before the next round overwrites it
    dst[i] = acc


@cuda.jit
def pairs(src, dst):
    s = cuda.shared.array(9, np.float64)  # one cell more than the block has threads
    t = cuda.threadIdx.x
    s[t] = src[cuda.grid(1)]
    cuda.syncthreads()
    dst[cuda.grid(1)] = s[t] + s[t + 1]  # the last thread reads s[8]: nobody wrote it


@cuda.jit
def early_exit(src, dst):
    s = cuda.shared.array(8, np.float64)
    i = cuda.grid(1)
    t = cuda.threadIdx.x
    if i >= dst.size:
        return  # before the barrier: the spare threads never reach it
    s[t] = src[i]
    cuda.syncthreads()
    dst[i] = s[t]


@cuda.jit
def two_barriers(src, dst):
    t = cuda.threadIdx.x
    if t < 4:
        cuda.syncthreads()
    else:
        cuda.syncthreads()  # another barrier: the two halves wait at different places
    dst[cuda.grid(1)] = src[cuda.grid(1)]


@cuda.jit
def spin(flag, dst):
    if cuda.threadIdx.x == 0:
        cuda.syncthreads()  # thread 1 never comes: a deadlock on a GPU
        flag[0] = 1
    else:
        while flag[0] == 0:
            pass
    dst[cuda.threadIdx.x] = 1


@cuda.jit
def histogram(src, counts):
    i = cuda.grid(1)
    if i < src.size:
        cuda.atomic.add(counts, src[i] % 3, 1)


@cuda.jit(device=True)
def twice(a):
    return 2 * a


@cuda.jit
def with_device_function(src, dst):
    s = cuda.shared.array(4, np.float64)
    t = cuda.threadIdx.x
    s[t] = twice(src[cuda.grid(1)])
    cuda.syncthreads()
    dst[cuda.grid(1)] = s[3 - t]


def kinds(t) -> list[str]:
    return [f.kind for f in t.findings]


# ------------------------------------------------------------------ counting
def test_counts_every_access_by_thread_and_block():
    src, dst = np.arange(10.0), np.zeros(10)
    t = trace(copy_twice, 3, 4, src, dst)  # 12 threads, 2 spare
    np.testing.assert_array_equal(dst, src + src[np.arange(10) // 2])
    c = t.counts()
    assert (c["src"]["reads"], c["src"]["writes"], c["dst"]["writes"]) == (20, 0, 10)
    assert c["src"]["distinct_read"] == 10 and c["src"]["reuse"] == 2.0
    assert t.per_thread("global", "read").tolist() == [[2] * 4, [2] * 4, [2, 2, 0, 0]]
    assert t.per_block("global", "write").tolist() == [4, 4, 2]
    assert t.totals() == {"global_reads": 20, "global_writes": 10, "shared_reads": 0,
                          "shared_writes": 0}
    assert t.indices("src", block=(2,), thread=(1,)) == [(9,), (4,)]  # program order
    # src[e] is read by thread e and by threads 2e and 2e + 1 (those below 10)
    assert t.count_map("src").tolist() == [3, 3, 3, 3, 3, 1, 1, 1, 1, 1]
    assert t.findings == [] and t.ok


def test_phases_and_barriers_are_counted():
    src, dst = np.arange(16.0), np.zeros(16)
    t = trace(rotate, 2, 8, src, dst, True, True)
    assert t.ok, t.summary()
    np.testing.assert_array_equal(dst, 3 * src.reshape(2, 8)[:, np.r_[1:8, 0]].ravel())
    assert (t.barriers_per_thread() == 4).all()
    rows = t.phases()
    assert [r["shared_writes"] for r in rows] == [16, 0, 16, 0, 0]
    assert [r["shared_reads"] for r in rows] == [0, 16, 0, 16, 0]
    assert [r["global_writes"] for r in rows] == [0, 0, 0, 0, 16]


def test_size_limit_is_clear():
    with pytest.raises(TraceLimitError, match=r"5,000 threads \(grid \(50, 1, 1\) x block "
                                              r"\(100, 1, 1\)\).*at most 4,096"):
        trace(copy_twice, 50, 100, np.zeros(5000), np.zeros(5000))


# ------------------------------------------------------------------ the checks
def test_out_of_bounds_names_the_thread_and_index():
    src, dst = np.arange(10.0), np.zeros(10)
    t = trace(unguarded, 3, 4, src, dst)  # the simulator alone: IndexError, no thread named
    assert kinds(t) == ["out-of-bounds", "out-of-bounds"]
    read, write = t.findings
    assert read.message == ("thread (2, 0, 0) of block (2, 0, 0) reads src[10], outside src's "
                            "shape (10,); 1 more out-of-bounds reads of src by 2 thread(s)")
    assert (write.array, write.index, write.block, write.thread, write.count) == (
        "dst", (10,), (2, 0, 0), (2, 0, 0), 2)
    np.testing.assert_array_equal(dst, src)  # the run went on; nothing was written outside


def test_negative_index_is_reported_and_wraps_as_on_a_gpu():
    src, dst = np.arange(1.0, 9.0), np.zeros(8)
    t = trace(left_neighbour, 1, 8, src, dst)
    assert kinds(t) == ["out-of-bounds"]
    assert t.findings[0].message.startswith("thread (0, 0, 0) of block (0, 0, 0) reads src[-1]")
    assert "Numba wraps it around" in t.findings[0].message
    assert dst[0] == src[-1] + src[0]


def test_two_writers_race():
    t = trace(halves, 2, 4, np.arange(8.0), np.zeros(4))
    assert kinds(t) == ["race"]
    assert t.findings[0].message == (
        "thread (0, 0, 0) of block (0, 0, 0) writes dst[0] and thread (1, 0, 0) of block "
        "(0, 0, 0) writes it too, in the same barrier phase 0: no cuda.syncthreads() between "
        "them; 3 more element(s) of dst race")


def test_blocks_race_on_global_memory():
    t = trace(block_sums, 2, 4, np.arange(8.0), np.zeros(4))
    assert kinds(t) == ["race"]
    assert "of block (1, 0, 0) writes it too, from another block" in t.findings[0].message


@pytest.mark.parametrize("before, after, phase", [(False, True, 0), (True, False, 1)],
                         ids=["no-sync-before-read", "no-sync-before-overwrite"])
def test_missing_syncthreads_is_a_race(before, after, phase):
    """Read-after-write and write-after-read by another thread in one barrier phase: the
    verdict does not depend on the order the simulator ran the threads in."""
    t = trace(rotate, 2, 8, np.arange(16.0), np.zeros(16), before, after)
    race = next(f for f in t.findings if f.kind == "race")
    assert race.array == "s" and race.block == (0, 0, 0)
    assert re.fullmatch(r"thread \(0, 0, 0\) of block \(0, 0, 0\) writes s\[0\] and thread "
                        rf"\(7, 0, 0\) of block \(0, 0, 0\) reads it, in the same barrier "
                        rf"phase {phase}: no cuda.syncthreads\(\) between them; 15 more "
                        r"element\(s\) of s race", race.message), race.message


def test_uninitialised_shared_read():
    t = trace(pairs, 2, 8, np.arange(16.0), np.zeros(16))
    assert kinds(t) == ["uninitialised"]
    f = t.findings[0]
    assert f.message == ("thread (7, 0, 0) of block (0, 0, 0) reads s[8] in barrier phase 1, "
                         "but no thread wrote it before (shared memory starts as garbage; NaN "
                         "here); 1 more element(s) of s read uninitialised")
    assert (f.array, f.index, f.count) == ("s", (8,), 2)


def test_early_return_before_a_barrier_is_divergent_and_does_not_hang():
    t = trace(early_exit, 2, 8, np.arange(16.0), np.zeros(12))
    assert kinds(t) == ["divergent-barrier"]
    assert t.findings[0].message.startswith(
        "thread (4, 0, 0) of block (1, 0, 0) passed 0 syncthreads, thread (0, 0, 0) passed 1")


def test_barriers_in_two_branches_are_divergent():
    t = trace(two_barriers, 1, 8, np.arange(8.0), np.zeros(8))
    assert kinds(t) == ["divergent-barrier"]
    lines, first = inspect.getsourcelines(two_barriers.py_func)
    at = [first + n for n, text in enumerate(lines) if "cuda.syncthreads()" in text]
    assert (f"waits at the syncthreads on line {at[0]}, thread (4, 0, 0) at the one on "
            f"line {at[1]}") in t.findings[0].message


def test_a_deadlock_is_bounded():
    with pytest.raises(TraceLimitError, match="more than 2,000 memory accesses"):
        trace(spin, 1, 2, np.zeros(1), np.zeros(2), max_events=2000)


def test_atomics_do_not_race_and_count_once():
    counts = np.zeros(3, np.int64)
    t = trace(histogram, 2, 8, np.arange(16), counts)
    assert t.ok, t.summary()
    assert counts.tolist() == [6, 5, 5]
    assert t.counts()["counts"]["atomics"] == 16


def test_device_functions_and_correct_shared_kernels_are_clean():
    src, dst = np.arange(8.0), np.zeros(8)
    t = trace(with_device_function, 2, 4, src, dst)
    assert t.ok, t.summary()
    np.testing.assert_array_equal(dst, 2 * src.reshape(2, 4)[:, ::-1].ravel())
    assert cuda.threadIdx is not None  # the real module is back in the kernel's globals
    assert with_device_function.py_func.__globals__["cuda"] is cuda


# ------------------------------------------------------------------ convlab's kernels
# (input shape, weight shape, conv args): stride, dilation, ragged tiles, groups, padding
SPECS = {
    "ragged": ((1, 3, 5, 6), (5, 3, 3, 2), dict(padding=1)),
    "stride": ((1, 2, 9, 11), (3, 2, 3, 3), dict(stride=(2, 3), padding=(1, 2))),
    "dilation": ((1, 3, 9, 8), (4, 3, 2, 3), dict(dilation=(3, 2), padding=(2, 0))),
    "groups": ((1, 6, 6, 7), (9, 2, 3, 3), dict(groups=3, padding=1)),
    "valid": ((1, 4, 8, 8), (4, 4, 3, 3), {}),
}


def _spec(name: str) -> ConvSpec:
    xs, ws, args = SPECS[name]
    return ConvSpec.from_shapes(xs, ws, **args)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_traced_reads_are_the_formulas(name):
    """Measured, not assumed: the traced global reads of both kernels equal
    expected_reads; global_loads counts every tap for naive (an upper bound, exact
    without padding) and, for tiled, what is staged (the shared-memory writes)."""
    spec = _spec(name)
    for algo in ("cuda_naive", "cuda_tiled"):
        t, _ = trace_spec(spec, algo)  # also checks the output against the oracle
        assert t.ok, t.summary()
        c = t.counts()
        got = {"input": c["x"]["reads"], "weight": c["w"]["reads"], "bias": c["b"]["reads"]}
        want = expected_reads(spec, algo)
        assert got == {k: want[k] for k in got}, (algo, got, want)
        assert c["out"]["writes"] == c["out"]["distinct_written"] == spec.batch * int(
            np.prod(spec.output_shape[-3:]))
        loads = ck.global_loads(spec, algo, ck.SIM_CONFIG)
        if algo == "cuda_naive":
            assert got["input"] <= loads["input"]
            assert (got["input"] == loads["input"]) == (not any(spec.padding))
        else:
            assert (c["x_s"]["writes"], c["w_s"]["writes"]) == (loads["input"], loads["weight"])


def test_another_tile_config_traced():
    """Tiles unlike the simulator's (th != tw, 4 pixels and 4 channels per thread), on an
    input ragged in every direction: 10 channels for tk=8, 5 for ck=4, 9x11 pixels."""
    cfg = ck.TileConfig(tk=8, rk=4, th=7, tw=8, rp=4, ck=4)
    spec = ConvSpec.from_shapes((1, 5, 9, 11), (10, 5, 3, 3), padding=1)
    t, _ = trace_spec(spec, "cuda_tiled", cfg)
    assert t.ok, t.summary()
    assert t.threads_per_block == cfg.threads == 28
    want = expected_reads(spec, "cuda_tiled", cfg)
    c = t.counts()
    assert (c["x"]["reads"], c["w"]["reads"], c["b"]["reads"]) == (
        want["input"], want["weight"], want["bias"])


def test_expected_reads_rejects_other_kernels():
    with pytest.raises(ValueError, match="knows 'cuda_naive' and 'cuda_tiled'"):
        expected_reads(_spec("valid"), "winograd")


def test_traced_output_is_checked(monkeypatch):
    """trace_spec raises when the traced kernel computes a wrong result."""
    from convlab import cuda_trace

    real = cuda_trace.trace_conv

    def off_by_a_bit(*args, **kw):
        t, out = real(*args, **kw)
        return t, out + 1e-2

    monkeypatch.setattr(cuda_trace, "trace_conv", off_by_a_bit)
    with pytest.raises(AssertionError, match="traced a wrong result"):
        trace_spec(_spec("valid"), "cuda_naive")


def test_inputs_are_untouched_and_no_bias_works():
    from convlab.cuda_trace import trace_conv

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    xa, wa, _, spec = prepare(x, w, None, padding=1)
    before = xa.copy(), wa.copy()
    _, out = trace_conv("cuda_tiled", xa, wa, None, spec)
    np.testing.assert_array_equal(xa, before[0])
    np.testing.assert_array_equal(wa, before[1])
    np.testing.assert_allclose(out, conv2d_reference(xa, wa, None, spec), atol=1e-4)


# ------------------------------------------------------------------ pictures
# (they share one pair of traces: the small layer `convlab figures` draws, traced once)
def test_thread_reads_picture_is_the_receptive_field():
    import matplotlib

    matplotlib.use("Agg")
    from convlab.cuda_viz import _example_traces, draw_thread_reads, drawn

    spec, naive, _ = _example_traces()
    # thread 0 of block 1 (32-thread blocks) computes output element 32, j fastest
    fig = draw_thread_reads(naive, block=(1, 0, 0), thread=(0, 0, 0))
    n, k, i, j = np.unravel_index(32, spec.batched_output_shape)
    (sh, sw), (dh, dw), (top, _, left, _) = spec.stride, spec.dilation, spec.padding
    window = {(0, c, i * sh + p * dh - top, j * sw + q * dw - left)
              for c in range(spec.in_channels) for p in range(3) for q in range(3)}
    inside = {cell for cell in window if 0 <= cell[2] < spec.height and 0 <= cell[3] <
              spec.width}
    assert len(inside) < len(window)  # the window hangs into the padding: those aren't read
    assert drawn(fig, "read") == inside
    assert drawn(fig, "written") == {(n, k, i, j)}
    assert drawn(fig, "thread-chosen") == {(1, 0)}
    assert len(drawn(fig, "thread")) == naive.n_blocks * 32 - 1


def test_staging_picture_is_the_block_patch():
    import matplotlib

    matplotlib.use("Agg")
    from convlab.cuda_viz import _example_traces, block_footprint, draw_staging, drawn, tiled_block

    spec, _, tiled = _example_traces()
    cfg = ck.SIM_CONFIG
    ph, pw = cfg.patch(spec)
    fig = draw_staging(tiled, tiled_block(spec, cfg, (0, 2)), shape=(cfg.ck, ph, pw))
    fp = block_footprint(spec, cfg, (0, 2))
    (r0, r1), (c0, c1) = fp["in_rows"], fp["in_cols"]
    inside = {(y, x) for y in range(max(r0, 0), min(r1, spec.height))
              for x in range(max(c0, 0), min(c1, spec.width))}
    assert r0 < 0 and c1 > spec.width  # the patch hangs over the padding and the edge
    assert drawn(fig, "fed") == {(0, c, y, x) for c in range(cfg.ck) for y, x in inside}
    staged = {(c, y - r0, x - c0) for c in range(cfg.ck) for y, x in inside}
    assert drawn(fig, "staged") == staged
    assert drawn(fig, "zero") == {(c, r, q) for c in range(cfg.ck) for r in range(ph)
                                  for q in range(pw)} - staged
    assert drawn(fig, "unwritten") == set()


def test_heatmaps_show_the_traced_counts():
    import matplotlib

    matplotlib.use("Agg")
    from convlab.cuda_viz import _example_traces, draw_read_heatmaps, drawn, read_counts

    spec, naive_t, tiled_t = _example_traces()
    fig = draw_read_heatmaps({"cuda_naive": naive_t, "cuda_tiled": tiled_t})
    naive = read_counts(naive_t)
    assert naive.sum() == expected_reads(spec, "cuda_naive")["input"]
    # K * C * the windows over the cell: 4 at a corner (padding 1), 9 inside
    assert naive[0, 0] == 4 * 2 * 4 and naive[4, 5] == 4 * 2 * 9
    tiled = read_counts(tiled_t)
    assert tiled.sum() == expected_reads(spec, "cuda_tiled")["input"] < naive.sum() / 10
    for n in np.unique(naive):
        cells = {(r, c) for r, c in zip(*np.nonzero(naive == n))}
        assert cells <= drawn(fig, f"count-{n}")


# ------------------------------------------------------------------ the docs' table
def _sci(v: float) -> str:
    mantissa, exponent = f"{v:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def test_docs_table_is_the_formulas():
    """docs/cuda.md's table of global reads for the ResNet layers is what the code says."""
    lines = (ROOT / "docs" / "cuda.md").read_text().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines
            if re.match(r"\| \d+@\d+ \|", line)]
    assert [r[0] for r in rows] == ["64@56", "128@28", "256@14", "512@7"]
    for layer, cfg_text, blocks, *numbers in rows:
        c, hw = map(int, layer.split("@"))
        spec = ConvSpec.create((8, c, hw, hw), c, 3, padding=1)
        cfg = ck.choose_config(spec)
        assert cfg_text == str(tuple(cfg)) and int(blocks) == int(np.prod(cfg.grid(spec)))
        naive = expected_reads(spec, "cuda_naive")["total"]
        tiled = expected_reads(spec, "cuda_tiled", cfg)
        once = ck.global_loads(spec, "compulsory")
        assert numbers == [_sci(ck.global_loads(spec, "cuda_naive")["total"]), _sci(naive),
                           _sci(ck.global_loads(spec, "cuda_tiled", cfg)["total"]),
                           _sci(tiled["total"]), f"{naive / tiled['total']:.0f}x",
                           f"{tiled['input'] / once['input']:.1f}x",
                           f"{tiled['weight'] / once['weight']:.0f}x"], layer


def test_figures_draws_the_traced_pictures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from convlab import figures
    from convlab.cuda_viz import example_figures

    notes: list[str] = []
    written = figures.build_cuda(tmp_path, notes.append)
    assert [p.name for p in written] == list(example_figures())
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(notes) == 3 and "cuda_read_heatmap.png" in notes[2]


# ------------------------------------------------------------------ with the simulator on
def test_trace_cases_on_the_simulator():
    """tests/cuda_trace_cases.py with NUMBA_ENABLE_CUDASIM=1, as notebook 07 runs."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(ROOT / "tests" / "cuda_trace_cases.py")],
        cwd=ROOT, env={**env, "NUMBA_ENABLE_CUDASIM": "1"}, capture_output=True, text=True,
        timeout=600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= 4, tail
    assert "failed" not in proc.stdout and "skipped" not in proc.stdout, tail


def test_docstring_example():
    import doctest

    from convlab import cuda_trace

    failures, tried = doctest.testmod(cuda_trace, verbose=False)
    assert failures == 0 and tried >= 6
