"""The type checker is clean: ``mypy`` (configured in pyproject.toml, ``[tool.mypy]``)
reports no error on convlab.  Modules not yet clean are listed there, each with
``ignore_errors``; everything else, the dispatch path included, must stay clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_is_clean():
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--python-executable", sys.executable],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
