"""Builds ``wsload.c`` and drives it: the load client of ``peers.py`` and ``channels.py``.

One wsload process holds up to ``per_process`` connections (a process may hold 20,000 file
descriptors here), pinned to ``LOAD_CPU``; its JSON report has exact lost, duplicate and
corrupt counts and latency quantiles, which ``sum_clients`` adds up.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from common import HERE, BenchmarkError, Processes
from systems import LOAD_CPU, System


def compile_wsload(directory: Path) -> Path:
    """``gcc -O2`` bench/wsload.c into ``directory``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchmarkError("gcc not found: it builds the load client (apt-get install gcc)")
    binary = directory / "wsload"
    done = subprocess.run(
        [gcc, "-O2", "-Wall", "-o", str(binary), str(HERE / "wsload.c")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchmarkError(f"gcc failed:\n{done.stderr}")
    return binary


class LoadClients:
    """wsload processes holding ``count`` connections between them, pinned to the load CPU.

    Each one prints ``ready N``, then one JSON line when it has all its frames, when it
    times out, or when told to stop (a line on its stdin). A thread per process forwards
    those lines to one queue, so that every wait here has a deadline.
    """

    def __init__(
        self, processes: Processes, binary: Path, system: System, count: int, messages: int,
        size: int, timeout: float, per_process: int,
    ) -> None:  # fmt: skip
        self._processes = processes
        self._lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self.running: list[subprocess.Popen] = []
        self._stderr: list[Path] = []
        shares, offset = math.ceil(count / per_process), 0
        for index in range(shares):
            share = count // shares + (index < count % shares)
            command = [
                str(binary), "-p", str(system.ws_port), "-u", system.sub_path,
                "-n", str(share), "-m", str(messages), "-s", str(size), "-c", "200",
                "-t", str(timeout), "-C", "60", "-o", str(offset),
            ]  # fmt: skip
            offset += share
            if system.subscribe:
                command += ["-S", system.subscribe]
            if system.reply:
                command += ["-R", system.reply]
            self._stderr.append(system.workdir / f"wsload-{index}.err")
            with self._stderr[-1].open("w") as stderr:
                process = processes.spawn(
                    command, cpu=LOAD_CPU, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=stderr, text=True,
                )  # fmt: skip
            self.running.append(process)
            threading.Thread(target=self._forward, args=(index, process), daemon=True).start()

    def _forward(self, index: int, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._lines.put((index, line.strip()))
        self._lines.put((index, None))

    def _failure(self, index: int) -> BenchmarkError:
        process = self.running[index]
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2)
        message = self._stderr[index].read_text().strip()
        return BenchmarkError(f"load client {index} failed ({process.returncode}): {message}")

    def wait_ready(self, timeout: float) -> None:
        """Until every process has all its connections up (and subscribed)."""
        deadline, ready = time.monotonic() + timeout, 0
        while ready < len(self.running):
            try:
                index, line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchmarkError(f"load clients not ready after {timeout:.0f} s") from None
            if line is None or not line.startswith("ready"):
                raise self._failure(index)
            ready += 1

    def results(self, grace: float) -> list[dict[str, Any]]:
        """Each process's JSON line; those without one after ``grace`` s are told to stop."""
        found: dict[int, dict[str, Any]] = {}
        deadline, told = time.monotonic() + grace, False
        while len(found) < len(self.running):
            try:
                index, line = self._lines.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > deadline:
                    if told:
                        raise BenchmarkError("load clients did not report") from None
                    self.stop()
                    deadline, told = time.monotonic() + 10, True
                continue
            if line is None:
                if index not in found:
                    raise self._failure(index)
                continue
            found[index] = json.loads(line)
        self.close()
        return [found[index] for index in sorted(found)]

    def close(self) -> None:
        for process in self.running:
            self._processes.stop(process)

    def __enter__(self) -> LoadClients:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask every process for its figures now."""
        for process in self.running:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.write("stop\n")
                process.stdin.flush()


def sum_clients(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the client processes; latency quantiles are the worst process's."""
    total: dict[str, Any] = {}
    for key in ("connections", "received", "expected", "lost", "dups", "gaps", "corrupt",
                "closed", "pings", "cpu_s"):  # fmt: skip
        total[key] = sum(report[key] for report in reports)
    for key in ("p50_us", "p90_us", "p99_us", "max_us", "last_ns"):
        total[key] = max(report[key] for report in reports)
    total["first_ns"] = min((r["first_ns"] for r in reports if r["first_ns"]), default=0)
    return total
