"""The type checker is clean: ``mypy`` (configured in pyproject.toml, ``[tool.mypy]``)
reports no error on convlab, and no module is exempt (no ``ignore_errors``)."""

from __future__ import annotations

import re
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


def test_no_module_is_exempt_from_the_checker():
    config = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r"^\s*ignore_errors\s*=", config, re.MULTILINE), \
        "a module is exempt from mypy in pyproject.toml (ignore_errors)"
