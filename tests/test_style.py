"""The code base passes ruff (lint and format) and mypy, so style and types are checked
wherever tests run."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_check_and_format():
    for command in (["check", "."], ["format", "--check", "."]):
        out = subprocess.run([str(RUFF), *command], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_finds_no_errors():
    """The package type-checks with setup.cfg's [mypy] configuration (the zope plugin).

    From scratch every time: mypy-zope has given stale answers from mypy's incremental cache
    (Shoobx/mypy-zope#76), and a test run writes no cache into the checkout."""
    command = ["-m", "mypy", "--config-file", "setup.cfg", "--no-incremental"]
    command += ["--cache-dir", os.devnull]
    out = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
