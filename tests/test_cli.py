"""The convlab command: shape calculator and info."""

import functools
import os
import subprocess
import sys

import pytest

from convlab.cli import main


def test_shape_prints_everything(capsys):
    assert main(["shape", "--input", "64,5,10,12", "--out-channels", "2", "--kernel-size", "3",
                 "--padding", "same"]) == 0
    out = capsys.readouterr().out
    assert "output           (64, 2, 10, 12)" in out
    assert "top=1 bottom=1 left=1 right=1" in out
    assert "(2, 5, 3, 3)" in out and "(2,)" in out
    assert "parameters       92" in out
    assert f"{2 * 64 * 2 * 5 * 9 * 10 * 12:,}" in out


def test_shape_even_kernel_same_padding(capsys):
    assert main(["shape", "--input", "5,10,12", "--out-channels", "2", "--kernel-size", "4,2",
                 "--padding", "same", "--no-bias"]) == 0
    out = capsys.readouterr().out
    assert "output           (2, 10, 12)" in out
    assert "top=1 bottom=2 left=0 right=1" in out
    assert "bias             None" in out


@pytest.mark.parametrize("argv,needle", [
    (["--input", "64,5", "--out-channels", "2", "--kernel-size", "3"], "Expected 3D"),
    (["--input", "1,5,10,12", "--out-channels", "2", "--kernel-size", "3", "--stride", "2",
      "--padding", "same"], "padding='same' is not supported for strided convolutions"),
    (["--input", "1,5,10,12", "--out-channels", "2", "--kernel-size", "3", "--padding", "foo"],
     "Invalid padding string 'foo'"),
    (["--input", "1,5,10,12", "--out-channels", "x", "--kernel-size", "3"], "invalid int"),
    (["--input", "1,5,10,12", "--out-channels", "2"], "required"),
    (["--input", "1,6,10,12", "--out-channels", "2", "--kernel-size", "3", "--groups", "4"],
     "in_channels must be divisible by groups"),
    # negative sizes used to print output (-5, 2, 6, 6) and "FLOPs -19,440", exit 0
    (["--input=-5,3,8,8", "--out-channels", "2", "--kernel-size", "3"],
     "negative dimension -5 in input of size [-5, 3, 8, 8]"),
    (["--input", "1,3,-8,8", "--out-channels", "2", "--kernel-size", "3", "--padding", "10"],
     "negative dimension -8"),
    (["--input", "1,3,8,8", "--out-channels=-2", "--kernel-size", "3"],
     "out_channels must be a positive integer, got -2"),
    (["--input", "1,3,0,8", "--out-channels", "2", "--kernel-size", "3", "--padding", "2"],
     "Only zero batch or zero channel inputs are supported, but got input shape: [1, 3, 0, 8]"),
])
def test_shape_bad_arguments_one_line_exit_2(capsys, argv, needle):
    try:
        code = main(["shape"] + argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_shape_zero_channels_as_torch(capsys):
    # torch.nn.Conv2d(0, 3, 3) on a (1, 0, 6, 6) input returns shape (1, 0, 4, 4)
    assert main(["shape", "--input", "1,0,6,6", "--out-channels", "3", "--kernel-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "output           (1, 0, 4, 4)" in out
    assert "weight           (3, 0, 3, 3)" in out
    assert "FLOPs            0 " in out


def test_info_lists_kernels(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("numba", "numpy", "threading layer", "naive", "python", "cuda"):
        assert word in out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "convlab.cli", "shape", "--input",
                             "1,3,8,8", "--out-channels", "4", "--kernel-size", "3"],
                            capture_output=True, text=True, check=True)
    assert "(1, 4, 6, 6)" in result.stdout


def test_openblas_idle_threads_are_told_to_sleep_unless_the_user_chose():
    """OpenBLAS's threads spin ~0.1 s after each GEMM and slow whatever kernel runs next;
    convlab, imported before NumPy (always so in the convlab command), asks for the
    shortest spin, leaves a value the user set alone, and says what is in force."""
    code = "import convlab, os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    run = functools.partial(subprocess.run, capture_output=True, text=True, check=True)
    assert run([sys.executable, "-c", code], env=env).stdout.strip() == "4"
    assert run([sys.executable, "-c", code],
               env={**env, "OPENBLAS_THREAD_TIMEOUT": "20"}).stdout.strip() == "20"
    numpy_first = "import numpy; " + code  # too late to change OpenBLAS: left unset
    assert run([sys.executable, "-c", numpy_first], env=env).stdout.strip() == "None"
    command = "import sys; from convlab.cli import main; sys.exit(main(['info']))"
    info = run([sys.executable, "-c", command], env=env).stdout  # as the console script
    assert "blas threads     OpenBLAS idle threads: spin 2**4 cycles" in info
