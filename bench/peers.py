#!/usr/bin/env python3
"""Side by side in one run: exchange-stream, nchan (nginx) and a plain ``websockets`` server.

How to run (with the repository's virtualenv, which has ``websockets``; ``gcc``, ``nginx``
and ``libnginx-mod-nchan`` must be installed; a full run takes about 3-4 minutes)::

    .venv/bin/python bench/peers.py                          # every system and scenario
    .venv/bin/python bench/peers.py --systems nchan,websockets --scenarios saturated
    .venv/bin/python bench/peers.py --systems exchange-stream-redis --scenarios saturated,rate
    .venv/bin/python bench/peers.py --clients 500 --rate 50  # other sizes
    .venv/bin/python bench/peers.py --json > peers.json      # figures as JSON on stdout
    .venv/bin/python bench/peers.py --help                   # every option

Progress goes to stderr, the tables (or the JSON) to stdout. The exit status is 1 if any
scenario lost, duplicated or corrupted a message, or had a connection closed.

The three systems, each started afresh for every scenario, pinned to CPU 0:

* **exchange-stream**: this checkout (``PYTHONPATH`` is the repository) under
  ``twistd -n exchange-stream``; clients send ``{"op":"subscribe",...}`` and wait for
  ``{"result":true}``; one publish is ``POST /v1/mesh/publish``.
* **nchan**: nginx with one worker and a generated configuration (``nchan_publisher`` on
  ``/pub``, ``nchan_subscriber websocket`` on ``/sub``); CPU and RSS are the worker's.
* **exchange-stream-redis** (only when named): two nodes on a throwaway ``redis-server``,
  the clients on node B, the publisher on node A's API; node B's figures;
* **websockets**: ``bench/peer_websockets.py``, ``websockets.broadcast`` to a set; the
  publisher is one WebSocket connection to ``/pub``.

The load, pinned to CPU 1: ``bench/wsload.c`` (compiled with ``gcc -O2`` into a temporary
directory at the start: one process, one thread, epoll) holds the subscriber connections,
checks every frame's size and per-connection sequence, and keeps a latency histogram. The
publisher is this process: one connection, requests pipelined with at most ``--window`` in
flight (HTTP/1.1 keep-alive for exchange-stream and nchan; for the websockets peer, a
message counts as answered when it comes back on the publisher's own ``/sub`` connection,
which is one extra subscriber not counted in the figures). One connection keeps the
publishes in order, so every client must see seq 0, 1, 2, ... Each payload is
``{"event":"BTCUSDT@depth","data":{"seq":n,"t":T,"pad":"xx…"}}`` padded to ``--size``
bytes, with ``T`` = ``CLOCK_MONOTONIC`` ns just before the request is sent.

Scenarios:

* ``saturated``: ``--clients`` subscribers, ``--saturated-messages`` publishes as fast as the
  server answers (``--window`` in flight);
* ``rate``: the same clients, ``--rate`` publishes/s (message n at start + n/rate);
* ``idle``: ``--idle-connections`` subscribed connections idle for ``--idle-seconds``: server
  RSS before connecting and after, KiB per connection, idle CPU.

Figures: delivered/s (frames received / first publish to last receive); CPU per delivered
message of the server (``/proc/PID/stat``) and of the whole machine (``/proc/stat`` busy
time, both CPUs); the share of one core used by the server, the load client and the
publisher, and by other processes (a high *other* means the run was noisy); latency p50,
p99 and max (publish sent to frame received); lost, duplicate and corrupt frames and
closed connections, which must all be 0.

Reading the figures:

* **saturated depends on ``--window``.** exchange-stream gathers what one reactor turn
  writes to a connection into one ``send``, so the frames of pipelined publishes handled in
  the same turn leave together: the more publishes in flight, the fewer syscalls and TCP
  segments per frame, and its cost per delivery falls steeply with the window. nchan
  writes every message to every subscriber with its own ``writev``, so its cost hardly
  moves. Compare systems at the same window; ``rate`` (one publish every 10 ms) has no such
  batching and is the per-frame cost.
* **Both CPUs share the kernel's work.** Loopback TCP runs the receiver's side in softirq
  on the sender's CPU (and the ACKs' on the receiver's), and the kernel charges it to the
  process it interrupted: the server's figure includes part of the clients' TCP receive
  path, the client's part of the server's. *CPU0 busy* at 100 % with *CPU1 busy* below it
  says the server was the limit; the other way round, the load.
* **Saturated latency is queueing**, not a service time: a publish is answered once its
  frames are in socket buffers, not once they are read, so frames wait there.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
import json
import math
import os
import platform
import pwd
import queue
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from websockets.sync.client import connect as ws_connect

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
LOOPBACK = "127.0.0.1"  # The only address this benchmark talks to.
SERVER_CPU, LOAD_CPU = 0, 1
CHANNEL = "BTCUSDT@depth"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
SYSTEMS = ("exchange-stream", "nchan", "websockets")  # the default; also exchange-stream-redis
SCENARIOS = ("saturated", "rate", "idle")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class BenchmarkError(Exception):
    """The benchmark cannot run, or a result would be meaningless."""


def progress(text: str) -> None:
    """Progress goes to stderr so that ``--json`` output on stdout stays clean."""
    print(text, file=sys.stderr, flush=True)


# --- Processes -----------------------------------------------------------------------------


class Processes:
    """Every process the benchmark started, so that each is stopped on the way out.

    Each child gets its own session (process group), so one signal reaches a server's
    workers too (nginx), and Ctrl-C in the terminal reaches only this script, whose
    ``finally`` then stops the children.
    """

    def __init__(self) -> None:
        self._running: list[subprocess.Popen] = []

    def spawn(self, command: list[str], *, cpu: int, **popen: Any) -> subprocess.Popen:
        """Start ``command`` pinned to ``cpu``.

        Affinity is inherited at fork, and ``sched_setaffinity(0)`` changes the calling
        thread only, so the thread pins itself, forks, and pins itself back. Unlike a
        ``preexec_fn`` this is safe while other threads run, and unlike pinning the child
        after the fact it covers processes and threads the child starts at once (nginx).
        """
        own = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            process = subprocess.Popen(command, start_new_session=True, **popen)
        finally:
            os.sched_setaffinity(0, own)
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after ``timeout``.

        Only while the leader is not reaped: until then its pid (the group's id) cannot
        have been given to another process.
        """
        if process in self._running:
            self._running.remove(process)
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
                break
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for process in reversed(self._running[:]):
            self.stop(process)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from ``/proc/PID/stat`` (in clock ticks, 10 ms)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3, "state"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def process_rss_kib(pid: int) -> int:
    """Resident memory (``VmRSS``) of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchmarkError(f"no VmRSS for process {pid}")


def machine_cpu_seconds() -> tuple[dict[str, float], float, float]:
    """Busy CPU seconds since boot from ``/proc/stat``, for ``cpu`` (all) and each CPU; the
    interrupt part of it (irq + softirq, all CPUs); and steal (all CPUs).

    Busy is user + nice + system + irq + softirq (not idle, iowait or steal). Loopback TCP
    does much of its work in softirq; this kernel also charges that time to the stime of
    the process it interrupted (the sender, mostly), so it is part of the process figures
    too and is shown only to tell how much of them is the kernel's network stack. Steal is
    time the hypervisor gave to someone else: a high one makes a run slow and noisy.
    """
    busy: dict[str, float] = {}
    interrupts = steal = 0.0
    with open("/proc/stat") as file:
        for line in file:
            if not line.startswith("cpu"):
                break
            name, *values = line.split()
            user, nice, system, _idle, _iowait, irq, softirq, stolen = map(int, values[:8])
            busy[name] = (user + nice + system + irq + softirq) / CLOCK_TICK
            if name == "cpu":
                interrupts, steal = (irq + softirq) / CLOCK_TICK, stolen / CLOCK_TICK
    return busy, interrupts, steal


def own_cpu_seconds() -> float:
    """CPU of this process, all threads: the publisher (and a little bookkeeping)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_until(
    ready: Callable[[], bool], timeout: float, what: str, alive: subprocess.Popen
) -> None:
    """Poll ``ready`` every 50 ms until it holds; fail if ``alive`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive.poll() is not None:
            raise BenchmarkError(f"{what}: the process exited ({alive.returncode})")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if ready():
                return
        time.sleep(0.05)
    raise BenchmarkError(f"{what}: not ready after {timeout:.0f} s")


# --- What is published ---------------------------------------------------------------------


def payload(seq: int, sent_ns: int, size: int) -> str:
    """The published text, ``size`` bytes; wsload finds seq and T in it by their keys."""
    head = f'{{"event":"{CHANNEL}","data":{{"seq":{seq},"t":{sent_ns},"pad":"'
    return head + "x" * (size - len(head) - 3) + '"}}'


@dataclass
class PublishStats:
    """What the publisher did: sent and answered publishes, and its timing."""

    sent: int = 0
    answered: int = 0
    refused: int = 0
    first_ns: int = 0
    last_ns: int = 0
    max_lag_s: float = 0.0  # with --rate: the worst delay of a send behind its schedule
    error: str | None = None


class Publisher(Protocol):
    """Publishes ``count`` payloads in order, at most ``window`` unanswered at a time."""

    def run(self, count: int, size: int, rate: float | None, window: int) -> PublishStats: ...


def paced_sends(
    count: int, rate: float | None, slots: threading.Semaphore, stats: PublishStats
) -> Iterator[int]:
    """Yield each seq when it may go: on schedule (``rate``) and with a free window slot.

    Stops early when the answer side has set ``stats.error`` or no slot frees up in 30 s.
    """
    start = time.monotonic()
    for seq in range(count):
        if rate:
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if not slots.acquire(timeout=30) and not stats.error:
            stats.error = "no answer for 30 s"
        if stats.error:
            return
        if rate:
            stats.max_lag_s = max(stats.max_lag_s, time.monotonic() - start - seq / rate)
        yield seq


class HttpPublisher:
    """HTTP/1.1 POSTs pipelined on one keep-alive connection, at most ``window`` unanswered.

    A thread reads the answers in order (Content-Length or chunked bodies), checks each one
    with ``accept`` and frees a window slot. The one connection keeps publishes in order.
    """

    def __init__(
        self, port: int, request: Callable[[str], bytes], accept: Callable[[int, bytes], bool]
    ) -> None:
        self._port, self._request, self._accept = port, request, accept

    def run(self, count: int, size: int, rate: float | None, window: int) -> PublishStats:
        stats = PublishStats()
        slots = threading.Semaphore(window)
        sock = socket.create_connection((LOOPBACK, self._port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = threading.Thread(target=self._answers, args=(sock, count, slots, stats))
        reader.start()
        done = False
        try:
            for seq in paced_sends(count, rate, slots, stats):
                sent_ns = time.monotonic_ns()
                sock.sendall(self._request(payload(seq, sent_ns, size)))
                stats.first_ns = stats.first_ns or sent_ns
                stats.last_ns = sent_ns
                stats.sent += 1
            done = True
        except OSError as error:
            stats.error = f"send: {error}"
        finally:
            if not done:  # An error or Ctrl-C: the reader is not to wait for more answers.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            reader.join(40)
            sock.close()
        return stats

    def _answers(
        self, sock: socket.socket, count: int, slots: threading.Semaphore, stats: PublishStats
    ) -> None:
        file = sock.makefile("rb")
        try:
            while stats.answered + stats.refused < count and not stats.error:
                status, body = read_http_response(file)
                if self._accept(status, body):
                    stats.answered += 1
                else:
                    stats.refused += 1
                    if stats.refused == 1:
                        progress(f"  publish refused: {status} {body[:200]!r}")
                slots.release()
        except (OSError, ValueError) as error:
            stats.error = stats.error or f"answers: {error!r}"
        finally:
            slots.release(count)  # Wake the sender if it waits for a slot.


def read_http_response(file: Any) -> tuple[int, bytes]:
    """One HTTP/1.1 response from a buffered socket file: (status, body)."""
    status_line = file.readline(8192)
    if not status_line:
        raise ValueError("connection closed")
    status = int(status_line.split()[1])
    headers = {}
    while (line := file.readline(8192)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while chunk_size := int(file.readline(8192).split(b";")[0], 16):
            chunks.append(file.read(chunk_size))
            file.readline(8192)  # The CRLF after the chunk.
        while file.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # Trailers, then the empty line.
        return status, b"".join(chunks)
    return status, file.read(int(headers.get("content-length", "0")))


class WebSocketPublisher:
    """Publishes on one WebSocket connection to ``/pub`` of the websockets peer.

    That protocol has no answers, so the publisher also subscribes on ``/sub`` and counts a
    message as answered when it comes back there: the same bound on messages in flight as
    the HTTP publishers have (otherwise only TCP buffers would hold the publisher back).
    """

    def __init__(self, port: int) -> None:
        self._url = f"ws://{LOOPBACK}:{port}"

    def run(self, count: int, size: int, rate: float | None, window: int) -> PublishStats:
        stats = PublishStats()
        slots = threading.Semaphore(window)
        options: dict[str, Any] = {"compression": None, "open_timeout": 10, "ping_interval": None}
        with (
            ws_connect(f"{self._url}/sub", **options) as echo,
            ws_connect(f"{self._url}/pub", **options) as pub,
        ):
            reader = threading.Thread(target=self._echoes, args=(echo, count, slots, stats))
            reader.start()
            done = False
            try:
                for seq in paced_sends(count, rate, slots, stats):
                    sent_ns = time.monotonic_ns()
                    pub.send(payload(seq, sent_ns, size))
                    stats.first_ns = stats.first_ns or sent_ns
                    stats.last_ns = sent_ns
                    stats.sent += 1
                done = True
            except Exception as error:  # websockets raises its own errors, not only OSError
                stats.error = f"send: {error!r}"
            finally:
                if not done:  # An error or Ctrl-C: the reader is not to wait for more echoes.
                    echo.close()
                reader.join(40)
        return stats

    @staticmethod
    def _echoes(echo: Any, count: int, slots: threading.Semaphore, stats: PublishStats) -> None:
        try:
            while stats.answered < count and not stats.error:
                echo.recv(timeout=30)
                stats.answered += 1
                slots.release()
        except Exception as error:  # TimeoutError or a websockets ConnectionClosed
            stats.error = stats.error or f"echo: {error!r}"
        finally:
            slots.release(count)


# --- The systems ---------------------------------------------------------------------------


class System:
    """A server under test: how to start it, where clients connect, how to publish."""

    name = ""
    sub_path = ""
    subscribe: str | None = None  # the text frame a client sends after the handshake
    reply: str | None = None  # the answer it waits for
    log_error = re.compile(r"Traceback|Unhandled|#(error|critical)\]|\[(error|crit|alert|emerg)\]")

    def __init__(self, processes: Processes, workdir: Path) -> None:
        self.processes, self.workdir = processes, workdir
        self.ws_port = free_port()
        self.log = workdir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        raise NotImplementedError

    def publisher(self) -> Publisher:
        raise NotImplementedError

    @property
    def measured_pid(self) -> int:
        """The process whose CPU and RSS are the server's."""
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.processes.stop(self.process)
            self.process = None

    def log_tail(self, lines: int = 4) -> list[str]:
        """The last lines of the server's log: why it did not start, usually."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if line][-lines:]

    def log_problems(self) -> list[str]:
        """Error lines in the server's log (a Python traceback, nginx [error] and worse)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if self.log_error.search(line)]


class ExchangeStream(System):
    name = "exchange-stream"
    sub_path = "/exchange-stream"
    subscribe = json.dumps({"op": "subscribe", "channel": CHANNEL}, separators=(",", ":"))
    reply = '{"result":true}'

    def start(self) -> None:
        self.api_port = free_port()
        self.process = self.twistd(self.ws_port, self.api_port, self.log)

    def twistd(self, ws_port: int, api_port: int, log_path: Path, *options: str):
        """``twistd -n exchange-stream`` from this checkout, pinned, once healthy."""
        twistd = Path(sys.executable).parent / "twistd"
        if not twistd.exists():
            raise BenchmarkError(f"{twistd} not found: run this with the repository's venv")
        path = [str(REPOSITORY), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))  # this checkout runs
        command = [
            str(twistd), "-n", "--pidfile=", "exchange-stream",
            "--ws", f"tcp:{ws_port}:interface={LOOPBACK}",
            "--api", f"tcp:{api_port}:interface={LOOPBACK}",
            "--max-connections-per-ip", "100000", *options,
        ]  # fmt: skip
        with log_path.open("w") as log:
            process = self.processes.spawn(
                command, cpu=SERVER_CPU, env=env, cwd=self.workdir, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

        def healthy() -> bool:
            url = f"http://{LOOPBACK}:{api_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status == 200

        wait_until(healthy, 30, "exchange-stream /healthz", process)
        return process

    def publisher(self) -> Publisher:
        head = (
            f"POST /v1/mesh/publish HTTP/1.1\r\nHost: {LOOPBACK}:{self.api_port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        )

        def request(text: str) -> bytes:
            body = json.dumps({"c": f"ex:{CHANNEL}", "d": text}, separators=(",", ":"))
            return f"{head}{len(body)}\r\n\r\n{body}".encode()

        return HttpPublisher(
            self.api_port, request, lambda status, body: status == 200 and b'"E":null' in body
        )


class ExchangeStreamRedis(ExchangeStream):
    """Two exchange-stream nodes on a throwaway Redis: the clients on node B, the publisher
    on node A's API, so every message goes A → Redis PUBLISH → B → clients. Both nodes and
    Redis are pinned to the server CPU; the figures are node B's (the fan-out)."""

    name = "exchange-stream-redis"

    def start(self) -> None:
        from fanout import RedisProcess, redis_server_executable

        self.redis = RedisProcess(redis_server_executable())
        self.redis.__enter__()
        os.sched_setaffinity(self.redis.pid, {SERVER_CPU})
        mesh = ("--mesh", self.redis.url, "--workers", "1")
        self.api_port = free_port()  # node A's: the publisher's
        self.node_a = self.twistd(free_port(), self.api_port, self.workdir / "node-a.log", *mesh)
        self.process = self.twistd(self.ws_port, free_port(), self.log, *mesh)

    def stop(self) -> None:
        super().stop()
        if getattr(self, "node_a", None) is not None:
            self.processes.stop(self.node_a)
            self.node_a = None
        if getattr(self, "redis", None) is not None:
            self.redis.__exit__(None, None, None)
            self.redis = None


class Nchan(System):
    name = "nchan"
    sub_path = "/sub?id=BTCUSDT"

    def config(self, nginx: str) -> str:
        """nginx.conf for one worker; the comments say which settings matter and why."""
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fds = min(hard, 1_000_000)
        temp = "\n".join(
            f"  {kind}_temp_path {self.workdir}/{kind}_temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )  # all in the temporary directory: nginx creates and chowns these at start
        return f"""\
load_module {NCHAN_MODULE};
{worker_user(nginx)}
worker_processes 1;
daemon off;
master_process on;
pid {self.workdir}/nginx.pid;
error_log {self.log} warn;
# One fd per subscriber: the worker may use the whole hard limit.
worker_rlimit_nofile {fds};
events {{
  worker_connections {fds - 100};
}}
http {{
  access_log off;
{temp}
  # The publisher pipelines every publish on one keep-alive connection; nginx closes
  # a connection after 1,000 requests by default, which would cut the run short.
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  # The channel keeps at most 16 messages, for 10 s: the buffer cannot grow.
  nchan_message_buffer_length 16;
  nchan_message_timeout 10s;
  server {{
    listen {LOOPBACK}:{self.ws_port} backlog=4096;
    location = /pub {{
      nchan_publisher;
      nchan_channel_id $arg_id;
    }}
    location = /sub {{
      nchan_subscriber websocket;
      nchan_channel_id $arg_id;
      # A new subscriber gets only messages published after it connected (default: oldest).
      nchan_subscriber_first_message newest;
    }}
  }}
}}
"""

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists() or not NCHAN_MODULE.exists():
            raise BenchmarkError("needs nginx and libnginx-mod-nchan (apt-get install both)")
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config(nginx))
        command = [nginx, "-p", str(self.workdir), "-c", str(conf), "-e", str(self.log)]
        with (self.workdir / "nginx.out").open("w") as out:
            self.process = self.processes.spawn(
                command, cpu=SERVER_CPU, stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )
        self.worker = 0

        def listening() -> bool:
            workers = child_pids(self.process.pid)
            if len(workers) != 1:
                return False
            self.worker = workers[0]
            socket.create_connection((LOOPBACK, self.ws_port), timeout=1).close()
            return True

        wait_until(listening, 15, "nginx with one worker", self.process)

    @property
    def measured_pid(self) -> int:
        return self.worker  # The master only forks and waits.

    def publisher(self) -> Publisher:
        head = (
            f"POST /pub?id=BTCUSDT HTTP/1.1\r\nHost: {LOOPBACK}:{self.ws_port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        )

        def request(text: str) -> bytes:
            return f"{head}{len(text)}\r\n\r\n{text}".encode()

        # 201 Created (the channel has subscribers) or 202 Accepted (it has none).
        return HttpPublisher(self.ws_port, request, lambda status, _body: status in (201, 202))


def worker_user(nginx: str) -> str:
    """A ``user`` directive that leaves nginx's own client body directory as it is.

    With nchan loaded, nginx also creates its compiled-in client body directory
    (``/var/lib/nginx/body`` on Debian) despite ``client_body_temp_path``, and a root master
    chowns it to the worker's user (default ``nobody``). The worker runs as that directory's
    owner instead, so the chown changes nothing on the machine.
    """
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10).stderr
    match = re.search(r"--http-client-body-temp-path=(\S+)", built)
    if os.geteuid() != 0 or match is None or not Path(match.group(1)).exists():
        return "# (user: the default)"
    return f"user {pwd.getpwuid(Path(match.group(1)).stat().st_uid).pw_name};"  # chown: uid only


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (from ``/proc/*/stat``)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                    children.append(int(entry.name))
    return children


class WebsocketsPeer(System):
    name = "websockets"
    sub_path = "/sub"

    def start(self) -> None:
        command = [sys.executable, str(HERE / "peer_websockets.py"), "--port", str(self.ws_port)]
        with self.log.open("w") as log:
            self.process = self.processes.spawn(
                command, cpu=SERVER_CPU, stdout=subprocess.PIPE, stderr=log,
                stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        stdout = self.process.stdout
        assert stdout is not None

        def ready() -> bool:  # select first: a readline alone could wait forever
            readable, _, _ = select.select([stdout], [], [], 0.05)
            return bool(readable) and stdout.readline().strip() == "ready"

        wait_until(ready, 15, "websockets peer", self.process)

    def publisher(self) -> Publisher:
        return WebSocketPublisher(self.ws_port)


SYSTEM_CLASSES: dict[str, type[System]] = {
    cls.name: cls for cls in (ExchangeStream, ExchangeStreamRedis, Nchan, WebsocketsPeer)
}


# --- The load clients ----------------------------------------------------------------------


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


# --- Scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """CPU counters at one instant: wall clock, the server, this process, the machine."""

    wall: float
    server: float
    own: float
    busy: dict[str, float]  # "cpu" (all CPUs), "cpu0", "cpu1", ...
    interrupts: float
    steal: float

    @classmethod
    def take(cls, server_pid: int) -> Snapshot:
        busy, interrupts, steal = machine_cpu_seconds()
        return cls(
            time.monotonic(), process_cpu_seconds(server_pid), own_cpu_seconds(), busy,
            interrupts, steal,
        )  # fmt: skip


@dataclass
class Result:
    """One system in one scenario; ``problems`` lists what makes it invalid (empty: fine)."""

    system: str
    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


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


def run_delivery(
    system: System, args: argparse.Namespace, binary: Path, rate: float | None, messages: int
) -> dict[str, Any]:
    """Subscribe ``--clients``, publish ``messages`` (paced at ``rate`` if given), measure."""
    window = args.rate_window if rate else args.window
    with LoadClients(
        system.processes, binary, system, args.clients, messages, args.size,
        timeout=args.timeout, per_process=args.per_process,
    ) as clients:  # fmt: skip
        clients.wait_ready(90)
        before = Snapshot.take(system.measured_pid)
        stats = system.publisher().run(messages, args.size, rate, window)
        reports = clients.results(grace=args.grace)
        after = Snapshot.take(system.measured_pid)
    load = sum_clients(reports)
    wall = after.wall - before.wall
    delivered = load["received"]
    window_s = (load["last_ns"] - stats.first_ns) / 1e9 if delivered else 0.0
    server, publisher = after.server - before.server, after.own - before.own
    busy = {cpu: after.busy[cpu] - before.busy[cpu] for cpu in before.busy}
    interrupts = after.interrupts - before.interrupts
    machine, clients_cpu = busy["cpu"], load["cpu_s"]
    per_delivery = 1e6 / delivered if delivered else math.nan
    publish_s = (stats.last_ns - stats.first_ns) / 1e9
    return {
        "publishes": stats.answered, "publish_refused": stats.refused,
        "publish_error": stats.error, "publish_s": publish_s,
        "publishes_per_s": (stats.sent - 1) / publish_s if publish_s > 0 else 0.0,
        "publish_max_lag_s": stats.max_lag_s, "window": window,
        "delivered": delivered, "expected": load["connections"] * messages,
        "delivered_per_s": delivered / window_s if window_s > 0 else 0.0,
        "window_s": window_s, "wall_s": wall,
        "server_cpu_us_per_msg": server * per_delivery,
        "machine_cpu_us_per_msg": machine * per_delivery,
        "server_cpu_pct": 100 * server / wall,
        "client_cpu_pct": 100 * clients_cpu / wall,
        "publisher_cpu_pct": 100 * publisher / wall,
        "interrupts_cpu_pct": 100 * interrupts / wall,
        "steal_pct": 100 * (after.steal - before.steal) / wall,
        "other_cpu_pct": 100 * (machine - server - clients_cpu - publisher) / wall,
        "server_core_busy_pct": 100 * busy[f"cpu{SERVER_CPU}"] / wall,
        "load_core_busy_pct": 100 * busy[f"cpu{LOAD_CPU}"] / wall,
        "server_rss_kib": process_rss_kib(system.measured_pid),
        "clients": load,
    }  # fmt: skip


def run_idle(system: System, args: argparse.Namespace, binary: Path) -> dict[str, Any]:
    """RSS of the server at rest and with ``--idle-connections`` idle subscribers."""
    time.sleep(1.0)  # Let the server settle after start-up.
    rss_before = process_rss_kib(system.measured_pid)
    started = time.monotonic()
    with LoadClients(
        system.processes, binary, system, args.idle_connections, 0, args.size,
        timeout=args.idle_seconds + 120, per_process=args.per_process,
    ) as clients:  # fmt: skip
        clients.wait_ready(120)
        connect_s = time.monotonic() - started
        rss_connected = process_rss_kib(system.measured_pid)
        before = Snapshot.take(system.measured_pid)
        time.sleep(args.idle_seconds)
        after = Snapshot.take(system.measured_pid)
        rss_after = process_rss_kib(system.measured_pid)
        clients.stop()
        load = sum_clients(clients.results(grace=15))
    return {
        "connections": load["connections"], "connect_s": connect_s,
        "rss_before_kib": rss_before, "rss_connected_kib": rss_connected,
        "rss_after_kib": rss_after,
        "kib_per_connection": (rss_after - rss_before) / load["connections"],
        "idle_cpu_pct": 100 * (after.server - before.server) / (after.wall - before.wall),
        "clients": load,
    }  # fmt: skip


def check(figures: dict[str, Any]) -> list[str]:
    """What makes a result invalid: anything lost, duplicated, corrupt, closed or refused."""
    load, problems = figures["clients"], []
    for key in ("lost", "dups", "corrupt", "closed"):
        if load[key]:
            problems.append(f"{key} {load[key]}")
    if load.get("gaps") and not load["lost"]:
        problems.append(f"out of order {load['gaps']}")
    if figures.get("publish_refused"):
        problems.append(f"refused {figures['publish_refused']}")
    if figures.get("publish_error"):
        problems.append(f"publisher: {figures['publish_error']}")
    return problems


def run_scenario(
    name: str, scenario: str, args: argparse.Namespace, processes: Processes, binary: Path,
    workdir: Path,
) -> Result:  # fmt: skip
    """Start ``name`` afresh, run ``scenario`` on it, stop it, and check the outcome."""
    directory = workdir / f"{name}-{scenario}"
    directory.mkdir()
    system = SYSTEM_CLASSES[name](processes, directory)
    result = Result(name, scenario)
    progress(f"{name} / {scenario} ...")
    try:
        system.start()
        if scenario == "idle":
            result.figures = run_idle(system, args, binary)
        elif scenario == "rate":
            result.figures = run_delivery(system, args, binary, args.rate, args.rate_messages)
        else:
            result.figures = run_delivery(system, args, binary, None, args.saturated_messages)
        result.problems = check(result.figures)
    except BenchmarkError as error:
        result.problems = [str(error), *(f"log: {line}" for line in system.log_tail())]
    else:  # The log up to now: what a server logs while it is stopped is not a problem.
        result.problems += [f"log: {line}" for line in system.log_problems()[:5]]
    finally:
        system.stop()
    progress(f"  {summary(result)}")
    return result


# --- Output --------------------------------------------------------------------------------


def summary(result: Result) -> str:
    f = result.figures
    if not f:
        text = "no figures"
    elif result.scenario == "idle":
        text = f"{f['kib_per_connection']:.1f} KiB/connection, idle CPU {f['idle_cpu_pct']:.1f} %"
    else:
        text = (
            f"{f['delivered_per_s'] / 1000:.0f}k delivered/s, server "
            f"{f['server_cpu_us_per_msg']:.2f} us/msg at {f['server_cpu_pct']:.0f} %, "
            f"client {f['client_cpu_pct']:.0f} %"
        )
    return text + ("; PROBLEMS: " + "; ".join(result.problems) if result.problems else "")


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(cell.rjust(width) if index else cell.ljust(width)
                  for index, (cell, width) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    )  # fmt: skip


def ms(us: float) -> str:
    return f"{us / 1000:.1f}" if us < 100_000 else f"{us / 1000:.0f}"


def report(results: list[Result], header: dict[str, Any]) -> str:
    """The readable tables: deliveries, their CPU, idle connections, then any problems."""
    out = [" ".join(f"{key}={value}" for key, value in header.items()), ""]
    delivery = [r for r in results if r.scenario != "idle" and r.figures]
    if delivery:
        rows, cpu_rows = [], []
        for r in delivery:
            f, load = r.figures, r.figures["clients"]
            rows.append([
                r.system, r.scenario, f"{f['delivered_per_s'] / 1000:.1f}k",
                f"{f['publishes_per_s']:.0f}",
                f"{f['publish_max_lag_s'] * 1000:.0f}" if r.scenario == "rate" else "-",
                ms(load["p50_us"]), ms(load["p99_us"]), ms(load["max_us"]),
                f"{load['lost']}/{load['dups']}/{load['corrupt']}/{load['closed']}",
                "FAIL" if r.problems else "ok",
            ])  # fmt: skip
            cpu_rows.append([
                r.system, r.scenario, f"{f['server_cpu_us_per_msg']:.2f}",
                f"{f['machine_cpu_us_per_msg']:.2f}", f"{f['server_cpu_pct']:.0f}",
                f"{f['client_cpu_pct']:.0f}", f"{f['publisher_cpu_pct']:.0f}",
                f"{f['interrupts_cpu_pct']:.0f}", f"{f['other_cpu_pct']:.0f}",
                f"{f['server_core_busy_pct']:.0f}", f"{f['load_core_busy_pct']:.0f}",
                f"{f['steal_pct']:.0f}",
            ])  # fmt: skip
        out.append(table(
            ["system", "scenario", "delivered/s", "publishes/s", "pub lag ms", "p50 ms",
             "p99 ms", "max ms", "lost/dup/corrupt/closed", "check"], rows))  # fmt: skip
        out.append("")
        out.append(table(
            ["system", "scenario", "server us/msg", "machine us/msg", "server %",
             "client %", "publisher %", "softirq %", "other %", f"CPU{SERVER_CPU} busy %",
             f"CPU{LOAD_CPU} busy %", "steal %"], cpu_rows))  # fmt: skip
        out.append(
            "us/msg: CPU microseconds per delivered message (machine: busy time of all CPUs)."
            "\n%: of one core over the run. softirq: irq + softirq time of all CPUs (loopback"
            " TCP), which is also in the\nfigures of the processes it interrupted. other: busy"
            f" time of other processes. Server on CPU{SERVER_CPU};\nload client and publisher"
            f" on CPU{LOAD_CPU}; CPUn busy: all of that CPU's busy time. steal: time the\n"
            "hypervisor gave to others (both CPUs): high means slow, noisy figures."
            "\npub lag: how far the publisher fell behind its --rate schedule."
        )
        out.append("")
    idle = [r for r in results if r.scenario == "idle" and r.figures]
    if idle:
        rows = [
            [
                r.system, str(r.figures["connections"]),
                f"{r.figures['rss_before_kib'] / 1024:.1f}",
                f"{r.figures['rss_after_kib'] / 1024:.1f}",
                f"{r.figures['kib_per_connection']:.2f}", f"{r.figures['idle_cpu_pct']:.1f}",
                f"{r.figures['connect_s']:.1f}", "FAIL" if r.problems else "ok",
            ]
            for r in idle
        ]  # fmt: skip
        out.append(table(
            ["system", "idle connections", "RSS before MiB", "RSS after MiB", "KiB/conn",
             "idle CPU %", "connect s", "check"], rows))  # fmt: skip
        out.append("")
    for r in results:
        if r.problems:
            out.append(f"PROBLEMS {r.system} / {r.scenario}: " + "; ".join(r.problems))
    return "\n".join(out)


def run_header() -> dict[str, Any]:
    """When, which code and which versions: enough to compare a run with another."""

    def output(*command: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip()
        return "?"

    # Uncommitted changes to the code under test (bench/ itself is left out).
    dirty = output("git", "-C", str(REPOSITORY), "status", "--porcelain", "--", ".", ":!bench")
    versions = {
        package: importlib.metadata.version(package)
        for package in ("twisted", "autobahn", "websockets")
    }
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": output("git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"),
        "code_dirty": bool(dirty),
        "python": platform.python_version(),
        **versions,
        "nginx": output("nginx", "-v").rpartition("/")[2],
        "nchan": output("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"),
        "cpus": os.cpu_count(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


# --- Main ----------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, in order")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--clients", type=int, default=1000, help="subscribers (delivery runs)")
    parser.add_argument("--saturated-messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0, help="publishes/s in 'rate'")
    parser.add_argument("--rate-messages", type=int, default=2000)
    parser.add_argument("--window", type=int, default=4, help="publishes in flight, saturated")
    parser.add_argument("--rate-window", type=int, default=64, help="in flight at most, rate")
    parser.add_argument("--size", type=int, default=280, help="bytes per published message")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--per-process", type=int, default=19_000, help="connections/client")
    parser.add_argument("--timeout", type=float, default=120.0, help="client's receive limit")
    parser.add_argument("--grace", type=float, default=15.0, help="wait after the last publish")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary dir")
    args = parser.parse_args()
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    for name in args.systems:
        if name not in SYSTEM_CLASSES:
            parser.error(f"unknown system {name!r}: choose from {', '.join(SYSTEM_CLASSES)}")
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}: choose from {', '.join(SCENARIOS)}")
    if args.size < 120:
        parser.error("--size must leave room for seq and T (at least 120 bytes)")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    args.per_process = min(args.per_process, hard - 100)
    return args


def on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: the ``finally`` clauses stop every child."""
    progress("peers.py: SIGTERM, stopping")
    sys.exit(143)


def main() -> int:
    args = parse_arguments()
    if not {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        raise BenchmarkError(f"needs CPUs {SERVER_CPU} and {LOAD_CPU}")
    os.sched_setaffinity(0, {LOAD_CPU})  # The publisher (this process) runs with the load.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # Inherited by the servers.
    signal.signal(signal.SIGTERM, on_sigterm)
    header = run_header()
    progress(" ".join(f"{key}={value}" for key, value in header.items()))
    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="peers-"))
    results: list[Result] = []
    try:
        binary = compile_wsload(workdir)
        for name in args.systems:
            for scenario in args.scenarios:
                results.append(run_scenario(name, scenario, args, processes, binary, workdir))
    finally:
        processes.stop_all()
        if args.keep_logs:
            progress(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({**header, "results": [asdict(r) for r in results]}, indent=1))
    else:
        print(report(results, header))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as error:
        sys.exit(f"peers.py: {error}")
    except KeyboardInterrupt:
        sys.exit("peers.py: interrupted")
