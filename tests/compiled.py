"""The C module of a book's per-level loops, built in place for the tests.

The tests import the package from this working tree, not from the install (which built its
own copy), so the module is built here too, from the same ``setup.py``, whenever its source
is newer than the build: the tests always run the C code that is in the tree. Without a C
compiler nothing is built, and the tests of the compiled loops say so (``level_loops``).
The build runs ``setup.py`` with this interpreter, which needs setuptools in the virtualenv:
the test extras name it (Python 3.12's venv no longer brings it).
"""

import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "exchange_stream" / "core" / "market" / "_level_scan.c"
BUILT = SOURCE.with_name("_level_scan" + sysconfig.get_config_var("EXT_SUFFIX"))


def build_in_place() -> str | None:
    """Build the module beside its source unless it is up to date; what the build printed
    when it failed, else None."""
    if BUILT.exists() and BUILT.stat().st_mtime >= SOURCE.stat().st_mtime:
        return None
    with tempfile.TemporaryDirectory() as temp:
        done = subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--build-temp", temp],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0 or not BUILT.exists():
        return done.stdout + done.stderr
    return None


BUILD_FAILURE = build_in_place()
