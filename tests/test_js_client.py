"""The browser client's unit tests (``clients/js``, Node's own test runner), run from pytest.

They exist so that CI, which runs pytest and nothing else, runs them too. Node 20 is on every
machine here and the tests need nothing downloaded, so a missing ``node`` fails, not skips.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "clients" / "js"


def test_node_test_passes_in_clients_js():
    """``node --test`` in clients/js runs some tests and all of them pass."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the browser client's tests need Node 20 or later")
    run = subprocess.run([node, "--test"], cwd=PACKAGE, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    ran = re.search(r"^# tests (\d+)$", run.stdout, re.MULTILINE)
    # With no test file found, node --test passes having run nothing.
    assert ran and int(ran.group(1)) > 0, output
