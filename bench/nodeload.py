"""Running ``bench/ws_fanout.mjs`` (Node's ``ws``), the second load generator, against a
server of ``systems.py``, pinned to ``LOAD_CPU``; shared by ``compression.py`` and
``latency.py``. Needs ``node`` and ``NODE_PATH`` naming a ``node_modules`` with ``ws@8``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from common import HERE, BenchmarkError
from systems import LOAD_CPU, Nchan, System

FANOUT = HERE / "ws_fanout.mjs"


def node_run(
    system: System, clients: int, messages: int, kind: str, mode: str, rate: float = 0,
    size: int = 0,
) -> dict:  # fmt: skip
    """One run: ``clients`` subscribers, ``messages`` publishes of ``kind`` (``pad`` of
    ``size`` bytes, ``depth``, ``trades``), the clients offering compression or not
    (``mode``), paced at ``rate`` publishes/s (0: 16 in flight); the script's JSON figures."""
    node = shutil.which("node")
    if node is None or not os.environ.get("NODE_PATH"):
        raise BenchmarkError("needs node and NODE_PATH pointing at a node_modules with ws@8")
    nchan = isinstance(system, Nchan)
    url = f"ws://127.0.0.1:{system.ws_port}{system.sub_path}"
    api = system.ws_port if nchan else system.api_port
    command = [
        "taskset", "-c", str(LOAD_CPU), node, str(FANOUT), url, str(api), str(clients),
        str(messages), "16", str(size), "nchan" if nchan else "es", kind, mode, str(rate),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise BenchmarkError(f"ws_fanout failed: {run.stdout}{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])
