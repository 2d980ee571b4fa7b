"""What the bench scripts share: free ports, a gateway process, and reading its resources."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(*options: str) -> tuple[subprocess.Popen, str, str]:
    """``twistd -n exchange-stream`` (the installed one) on free ports, once healthy:
    (process, WebSocket URL, API base URL)."""
    ws_port, api_port = free_port(), free_port()
    twistd = Path(sys.executable).parent / "twistd"
    process = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "exchange-stream",
         "--ws", f"tcp:{ws_port}:interface=127.0.0.1",
         "--api", f"tcp:{api_port}:interface=127.0.0.1", *options],
        cwd=tempfile.mkdtemp(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{api}/healthz", timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("the gateway did not start")
    return process, f"ws://127.0.0.1:{ws_port}/exchange-stream", api
