"""Argument types shared by the ``convlab`` commands (convlab/cli.py, convlab/cli_bench.py):
each turns one command-line word into a value, or says in one line what was wrong."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UsageError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = nonnegative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def suite_help() -> str:
    """Every suite ``--suite`` takes, from the suites' own tables (never typed twice)."""
    from .bench.suites import SUITES, SWEEPS, TOY_SUITES

    nets = ", ".join(f"{name} (default)" if name == "quick" else name for name in SUITES)
    return (f"{nets}; the sweeps (one layer, one thing growing) {', '.join(SWEEPS)}; or "
            f"{', '.join(TOY_SUITES)} (toy layers, the default on the CUDA simulator)")


def suite(text: str) -> str:
    from .bench import suite_names

    if text not in suite_names():
        raise argparse.ArgumentTypeError(f"unknown suite {text!r}; suites: "
                                         f"{', '.join(suite_names())}")
    return text


def names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def plot_path(text: str) -> Path:
    """--plot: an image file whose extension matplotlib can write (checked before the
    run, so a typo does not cost a whole benchmark)."""
    path = Path(text)
    if path.is_dir():
        raise UsageError(f"--plot {text!r} is a directory; give a file name such as "
                         f"{str(path / 'bench.png')!r}")
    supported = ("png", "svg", "pdf", "jpg", "jpeg")
    if path.suffix.lower().lstrip(".") not in supported:
        raise UsageError(f"--plot {text!r}: the name must end in one of "
                         f"{', '.join('.' + e for e in supported)} (it decides the format)")
    if not path.resolve().parent.is_dir():
        raise UsageError(f"cannot write --plot {text!r}: its folder does not exist")
    return path
