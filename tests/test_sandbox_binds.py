"""What the grading sandbox binds of the grader's Python: the installation, never the folder
the grader was started from (``python -m`` puts it first on sys.path), and binds made after
the private /tmp and home, so a virtual environment under /tmp (a CI's fresh clone) stays
visible inside."""

from __future__ import annotations

import os
import sys

from convlab.grading import sandbox


def test_the_start_folder_is_not_bound_but_the_installation_is(tmp_path, monkeypatch):
    course = tmp_path / "course"  # the teacher's folder: submissions, grades, solutions
    course.mkdir()
    monkeypatch.chdir(course)
    monkeypatch.setattr(sys, "path", [str(course), *sys.path])
    keep, _ = sandbox._python_folders()
    assert os.path.realpath(course) not in keep
    assert not any(os.path.realpath(course).startswith(k.rstrip("/") + "/") for k in keep)
    assert os.path.realpath(sys.prefix) in keep
    assert os.path.realpath(sys.base_prefix) in keep


def test_python_is_bound_after_the_private_tmp_and_home():
    from convlab.grading import _sandbox_init as init

    source = open(init.__file__).read()
    body = source[source.index("def build_root"):source.index("def limits")]
    assert body.index('root + "/tmp"') < body.index('cfg["read_only"]')
    assert body.index('cfg["home"]') < body.index('cfg["read_only"]')
