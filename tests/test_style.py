"""The code base passes ruff (lint and format), so style is checked wherever tests run."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_check_and_format():
    for command in (["check", "."], ["format", "--check", "."]):
        out = subprocess.run([str(RUFF), *command], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
