#!/usr/bin/env python3
"""Side by side in one run: exchange-stream, nchan (nginx) and a plain ``websockets`` server.

How to run (with the repository's virtualenv, which has ``websockets``; ``gcc``, ``nginx``
and ``libnginx-mod-nchan`` must be installed; a full run takes about 3-4 minutes)::

    .venv/bin/python bench/peers.py                          # every system and scenario
    .venv/bin/python bench/peers.py --systems nchan,websockets --scenarios saturated
    .venv/bin/python bench/peers.py --systems exchange-stream-redis --scenarios saturated,rate
    .venv/bin/python bench/peers.py --clients 500 --rate 50  # other sizes
    .venv/bin/python bench/peers.py --json > peers.json      # figures as JSON on stdout
    .venv/bin/python bench/peers.py --rev HEAD               # the last commit's gateway
    .venv/bin/python bench/peers.py --systems exchange-stream --profile /tmp/prof
    .venv/bin/python bench/peers.py --help                   # every option

Progress goes to stderr, the tables (or the JSON) to stdout. The exit status is 1 if any
scenario lost, duplicated or corrupted a message, or had a connection closed.

The three systems, each started afresh for every scenario, pinned to CPU 0:

* **exchange-stream**: ``twistd -n exchange-stream`` running this checkout as it is
  (``PYTHONPATH`` is the repository), a ``git archive`` of ``--rev``, or the ``--installed``
  package; clients send ``{"op":"subscribe",...}`` and wait for ``{"result":true}``; one
  publish is ``POST /v1/mesh/publish``. ``--profile DIR`` runs it under twistd's cProfile
  (about three times slower) and leaves one pstats file per run in DIR.
* **nchan**: nginx with one worker and a generated configuration (``nchan_publisher`` on
  ``/pub``, ``nchan_subscriber websocket`` on ``/sub``); CPU and RSS are the worker's.
* **exchange-stream-redis** (only when named): two nodes on a throwaway ``redis-server``
  (a free port, never 6379; it must report our pid before it is used), the clients on node
  B, the publisher on node A's API; node B's figures, and the CPU of node A and Redis in a
  line under the tables. Node A answers once Redis took the ``PUBLISH``, so the saturated
  publisher runs ahead of the fan-out: its latency is queueing;
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
import json
import math
import os
import pwd
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from common import (
    HERE,
    LOOPBACK,
    BenchmarkError,
    CpuSnapshot,
    Gateway,
    GatewayCode,
    Processes,
    child_pids,
    command_output,
    free_port,
    header_line,
    progress,
    raise_fd_limit,
    read_line,
    rss_kib,
    run_header,
    start_gateway,
    start_redis,
    table,
    wait_until,
)
from websockets.sync.client import connect as ws_connect

SERVER_CPU, LOAD_CPU = 0, 1
CHANNEL = "BTCUSDT@depth"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
SYSTEMS = ("exchange-stream", "nchan", "websockets")  # the default; also exchange-stream-redis
SCENARIOS = ("saturated", "rate", "idle")


# --- What is published ---------------------------------------------------------------------


def payload(seq: int, sent_ns: int, size: int, event: str = CHANNEL) -> str:
    """The published text, ``size`` bytes; wsload finds seq and T in it by their keys."""
    head = f'{{"event":"{event}","data":{{"seq":{seq},"t":{sent_ns},"pad":"'
    return head + "x" * (size - len(head) - 3) + '"}}'


@dataclass
class PublishStats:
    """What the publisher did: sent and answered publishes, and its timing."""

    sent: int = 0
    answered: int = 0
    refused: int = 0
    first_ns: int = 0
    last_ns: int = 0
    max_lag_s: float = 0.0  # with a rate: the worst delay of a send behind its schedule
    error: str | None = None


def paced_sends(
    count: int, rate: float | None, slots: threading.Semaphore, stats: PublishStats
) -> Iterator[int]:
    """Yield each number when it may go: on schedule (``rate``) and with a free window slot.

    Stops early when the answer side has set ``stats.error`` or no slot frees up in 30 s.
    """
    start = time.monotonic()
    for number in range(count):
        if rate:
            delay = start + number / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if not slots.acquire(timeout=30) and not stats.error:
            stats.error = "no answer for 30 s"
        if stats.error:
            return
        if rate:
            stats.max_lag_s = max(stats.max_lag_s, time.monotonic() - start - number / rate)
        yield number


# Builds request n's bytes, given the send time that its payloads carry.
Request = Callable[[int, int], bytes]


class PipelinedPublisher:
    """Publish requests on one connection, at most ``window`` of them unanswered.

    ``send`` writes one request's bytes; ``answer`` blocks for the next answer and says
    whether it accepted every publish in its request; ``close`` ends the connection, which
    also wakes a reader waiting for an answer that will not come. A thread reads the answers
    in order and frees window slots. One connection keeps the publishes in order, so every
    client must see seq 0, 1, 2, ...
    """

    def __init__(
        self, send: Callable[[bytes], object], answer: Callable[[], bool],
        close: Callable[[], None],
    ) -> None:  # fmt: skip
        self._send, self._answer, self._close = send, answer, close

    def __enter__(self) -> PipelinedPublisher:
        return self

    def __exit__(self, *_: object) -> None:
        self._close()

    def run(
        self, request: Request, sizes: list[int], rate: float | None, window: int
    ) -> PublishStats:
        """Send ``request(n, sent_ns)`` for every n, paced at ``rate`` requests/s if given;
        ``sizes[n]`` is how many publishes request n carries."""
        stats = PublishStats()
        slots = threading.Semaphore(window)
        reader = threading.Thread(target=self._answers, args=(sizes, slots, stats))
        reader.start()
        done = False
        try:
            for number in paced_sends(len(sizes), rate, slots, stats):
                sent_ns = time.monotonic_ns()
                self._send(request(number, sent_ns))
                stats.first_ns = stats.first_ns or sent_ns
                stats.last_ns = sent_ns
                stats.sent += sizes[number]
            done = True
        except Exception as error:  # OSError, or websockets' ConnectionClosed
            stats.error = f"send: {error!r}"
        finally:
            if not done:  # An error or Ctrl-C: the reader is not to wait for more answers.
                self._close()
            reader.join(60)
        return stats

    def _answers(self, sizes: list[int], slots: threading.Semaphore, stats: PublishStats) -> None:
        try:
            for size in sizes:
                if stats.error:
                    break
                if self._answer():
                    stats.answered += size
                else:
                    stats.refused += size
                slots.release()
        except Exception as error:  # a closed socket or WebSocket, a timeout: the run is over
            stats.error = stats.error or f"answers: {error!r}"
        finally:
            slots.release(len(sizes) or 1)  # Wake the sender if it waits for a slot.


def read_http_response(file: IO[bytes]) -> tuple[int, bytes]:
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


def http_request(port: int, path: str, body: bytes) -> bytes:
    """A keep-alive POST as it goes on the wire."""
    head = f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def http_publisher(port: int, accept: Callable[[int, bytes], bool]) -> PipelinedPublisher:
    """Pipelined POSTs on one keep-alive connection; ``accept(status, body)`` judges answers."""
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    file = sock.makefile("rb")

    def close() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    return PipelinedPublisher(sock.sendall, lambda: accept(*read_http_response(file)), close)


def websocket_publisher(
    url: str, accept: Callable[[str], bool], echo_url: str | None = None
) -> PipelinedPublisher:
    """Text frames on one WebSocket connection; ``accept`` judges the next frame that comes
    back, on the ``echo_url`` connection if given (opened first), else on the same one."""
    options: dict[str, Any] = {"compression": None, "max_size": None, "open_timeout": 10,
                               "ping_interval": None}  # fmt: skip
    echo = ws_connect(echo_url, **options) if echo_url else None
    connection = ws_connect(url, **options)
    answers = echo or connection

    def close() -> None:
        answers.close()
        connection.close()

    return PipelinedPublisher(
        lambda data: connection.send(data.decode()),
        lambda: accept(str(answers.recv(timeout=30))),
        close,
    )


# --- The systems ---------------------------------------------------------------------------


class System:
    """A server under test: how to start it, where clients connect, how to publish.

    Every process ``start`` runs is in ``running`` and ``stop`` ends them; ``process`` is the
    one whose CPU and RSS are the server's. ``code`` and ``profile`` are for exchange-stream.
    """

    name = ""
    sub_path = ""
    subscribe: str | None = None  # the text frame a client sends after the handshake
    reply: str | None = None  # the answer it waits for
    log_error = re.compile(r"Traceback|Unhandled|#(error|critical)\]|\[(error|crit|alert|emerg)\]")

    def __init__(
        self, processes: Processes, workdir: Path, code: GatewayCode, profile: Path | None = None
    ) -> None:
        self.processes, self.workdir, self.code, self.profile = processes, workdir, code, profile
        self.ws_port = 0
        self.log = workdir / f"{self.name}.log"
        self.running: list[subprocess.Popen] = []

    def start(self) -> None:
        raise NotImplementedError

    def publisher(self) -> PipelinedPublisher:
        raise NotImplementedError

    def publish_request(self, text: str) -> bytes:
        """What the publisher sends to publish ``text``."""
        raise NotImplementedError

    @property
    def measured_pid(self) -> int:
        """The process whose CPU and RSS are the server's."""
        return self.running[-1].pid

    def side_pids(self) -> dict[str, int]:
        """Other processes of the system whose CPU is shown, by role."""
        return {}

    def logs(self) -> list[Path]:
        return [self.log]

    def stop(self) -> None:
        while self.running:
            self.processes.stop(self.running.pop())

    def log_tail(self, lines: int = 4) -> list[str]:
        """The last lines of the server's log: why it did not start, usually."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if line][-lines:]

    def log_problems(self) -> list[str]:
        """Error lines in the logs (a Python traceback, nginx [error] and worse)."""
        lines = [
            line for log in self.logs() if log.exists()
            for line in log.read_text(errors="replace").splitlines()
        ]  # fmt: skip
        return [line for line in lines if self.log_error.search(line)]


class ExchangeStream(System):
    name = "exchange-stream"
    sub_path = "/exchange-stream"
    subscribe = json.dumps({"op": "subscribe", "channel": CHANNEL}, separators=(",", ":"))
    reply = '{"result":true}'

    def start(self) -> None:
        gateway = self.start_node(self.name, profile=self.profile)
        self.ws_port, self.api_port = gateway.ws_port, gateway.api_port

    def start_node(self, name: str, *options: str, profile: Path | None = None) -> Gateway:
        """One ``twistd exchange-stream`` of ``code``, pinned to the server CPU, healthy."""
        gateway = start_gateway(
            self.processes, self.code, self.workdir, "--max-connections-per-ip", "100000",
            *options, name=name, cpu=SERVER_CPU, profile=profile,
        )  # fmt: skip
        self.running.append(gateway.process)
        return gateway

    def publisher(self) -> PipelinedPublisher:
        return http_publisher(
            self.api_port, lambda status, body: status == 200 and b'"E":null' in body
        )

    def publish_request(self, text: str) -> bytes:
        body = json.dumps({"c": f"ex:{CHANNEL}", "d": text}, separators=(",", ":"))
        return http_request(self.api_port, "/v1/mesh/publish", body.encode())


class ExchangeStreamRedis(ExchangeStream):
    """Two exchange-stream nodes on a throwaway Redis: the clients on node B, the publisher
    on node A's API, so every message goes A → Redis PUBLISH → B → clients. Both nodes and
    Redis are pinned to the server CPU; the figures are node B's (the fan-out), with node A's
    and Redis's CPU beside them."""

    name = "exchange-stream-redis"

    def start(self) -> None:
        redis = start_redis(self.processes, self.workdir, cpu=SERVER_CPU)
        self.running.append(redis.process)
        mesh = ("--mesh", redis.url, "--workers", "1")  # one process per node
        node_a = self.start_node("node-a", *mesh)
        node_b = self.start_node(self.name, *mesh, profile=self.profile)
        self.ws_port, self.api_port = node_b.ws_port, node_a.api_port
        self.roles = {"node A": node_a.process.pid, "redis": redis.process.pid}

    def side_pids(self) -> dict[str, int]:
        return self.roles

    def logs(self) -> list[Path]:
        return [self.log, self.workdir / "node-a.log"]


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
        self.ws_port = free_port()
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config(nginx))
        command = [nginx, "-p", str(self.workdir), "-c", str(conf), "-e", str(self.log)]
        with (self.workdir / "nginx.out").open("w") as out:
            master = self.processes.spawn(
                command, cpu=SERVER_CPU, stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )
        self.running.append(master)

        def listening() -> bool:
            workers = child_pids(master.pid)
            if len(workers) != 1:
                return False
            self.worker = workers[0]
            socket.create_connection((LOOPBACK, self.ws_port), timeout=1).close()
            return True

        wait_until(listening, 15, "nginx with one worker", master)

    @property
    def measured_pid(self) -> int:
        return self.worker  # The master only forks and waits.

    def publisher(self) -> PipelinedPublisher:
        # 201 Created (the channel has subscribers) or 202 Accepted (it has none).
        return http_publisher(self.ws_port, lambda status, _body: status in (201, 202))

    def publish_request(self, text: str) -> bytes:
        return http_request(self.ws_port, "/pub?id=BTCUSDT", text.encode())


def worker_user(nginx: str) -> str:
    """A ``user`` directive that leaves nginx's own client body directory as it is.

    With nchan loaded, nginx also creates its compiled-in client body directory
    (``/var/lib/nginx/body`` on Debian) despite ``client_body_temp_path``, and a root master
    chowns it to the worker's user (default ``nobody``). The worker runs as that directory's
    owner instead, so the chown changes nothing on the machine.
    """
    built = command_output(nginx, "-V")
    match = re.search(r"--http-client-body-temp-path=(\S+)", built)
    if os.geteuid() != 0 or match is None or not Path(match.group(1)).exists():
        return "# (user: the default)"
    return f"user {pwd.getpwuid(Path(match.group(1)).stat().st_uid).pw_name};"  # chown: uid only


class WebsocketsPeer(System):
    name = "websockets"
    sub_path = "/sub"

    def start(self) -> None:
        self.ws_port = free_port()
        command = [sys.executable, str(HERE / "peer_websockets.py"), "--port", str(self.ws_port)]
        with self.log.open("w") as log:
            process = self.processes.spawn(
                command, cpu=SERVER_CPU, stdout=subprocess.PIPE, stderr=log,
                stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        self.running.append(process)
        assert process.stdout is not None
        if read_line(process.stdout, 15, "websockets peer") != "ready":
            raise BenchmarkError("websockets peer: did not say ready")

    def publisher(self) -> PipelinedPublisher:
        """That protocol has no answers, so the publisher also subscribes on ``/sub`` and
        counts a message as answered when it comes back there: the same bound on messages in
        flight as the HTTP publishers have (otherwise only TCP buffers would hold it back).
        """
        url = f"ws://{LOOPBACK}:{self.ws_port}"
        return websocket_publisher(f"{url}/pub", lambda _echo: True, echo_url=f"{url}/sub")

    def publish_request(self, text: str) -> bytes:
        return text.encode()


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
    sides = system.side_pids()

    def request(seq: int, sent_ns: int) -> bytes:
        return system.publish_request(payload(seq, sent_ns, args.size))

    with LoadClients(
        system.processes, binary, system, args.clients, messages, args.size,
        timeout=args.timeout, per_process=args.per_process,
    ) as clients, system.publisher() as publisher:  # fmt: skip
        clients.wait_ready(90)
        before = CpuSnapshot.take(system.measured_pid, *sides.values())
        stats = publisher.run(request, [1] * messages, rate, window)
        reports = clients.results(grace=args.grace)
        after = CpuSnapshot.take(system.measured_pid, *sides.values())
    load = sum_clients(reports)
    wall = after.wall - before.wall
    delivered = load["received"]
    window_s = (load["last_ns"] - stats.first_ns) / 1e9 if delivered else 0.0
    spent = [end - start for start, end in zip(before.processes, after.processes, strict=True)]
    server, side = spent[0], spent[1:]
    publisher_cpu = after.own - before.own
    busy = {cpu: after.busy[cpu] - before.busy[cpu] for cpu in before.busy}
    interrupts = after.interrupts - before.interrupts
    machine, clients_cpu = busy["cpu"], load["cpu_s"]
    per_delivery = 1e6 / delivered if delivered else math.nan
    publish_s = (stats.last_ns - stats.first_ns) / 1e9
    ours = server + sum(side) + clients_cpu + publisher_cpu
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
        "side_cpu_pct": {role: 100 * cpu / wall for role, cpu in zip(sides, side, strict=True)},
        "client_cpu_pct": 100 * clients_cpu / wall,
        "publisher_cpu_pct": 100 * publisher_cpu / wall,
        "interrupts_cpu_pct": 100 * interrupts / wall,
        "steal_pct": 100 * (after.steal - before.steal) / wall,
        "other_cpu_pct": 100 * (machine - ours) / wall,
        "server_core_busy_pct": 100 * busy[f"cpu{SERVER_CPU}"] / wall,
        "load_core_busy_pct": 100 * busy[f"cpu{LOAD_CPU}"] / wall,
        "server_rss_kib": rss_kib(system.measured_pid),
        "clients": load,
    }  # fmt: skip


def run_idle(system: System, args: argparse.Namespace, binary: Path) -> dict[str, Any]:
    """RSS of the server at rest and with ``--idle-connections`` idle subscribers."""
    time.sleep(1.0)  # Let the server settle after start-up.
    rss_before = rss_kib(system.measured_pid)
    started = time.monotonic()
    with LoadClients(
        system.processes, binary, system, args.idle_connections, 0, args.size,
        timeout=args.idle_seconds + 120, per_process=args.per_process,
    ) as clients:  # fmt: skip
        clients.wait_ready(120)
        connect_s = time.monotonic() - started
        rss_connected = rss_kib(system.measured_pid)
        before = CpuSnapshot.take(system.measured_pid)
        time.sleep(args.idle_seconds)
        after = CpuSnapshot.take(system.measured_pid)
        idle_s = after.wall - before.wall
        rss_after = rss_kib(system.measured_pid)
        clients.stop()
        load = sum_clients(clients.results(grace=15))
    return {
        "connections": load["connections"], "connect_s": connect_s,
        "rss_before_kib": rss_before, "rss_connected_kib": rss_connected,
        "rss_after_kib": rss_after,
        "kib_per_connection": (rss_after - rss_before) / load["connections"],
        "idle_cpu_pct": 100 * (after.processes[0] - before.processes[0]) / idle_s,
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
    workdir: Path, code: GatewayCode,
) -> Result:  # fmt: skip
    """Start ``name`` afresh, run ``scenario`` on it, stop it, and check the outcome."""
    directory = workdir / f"{name}-{scenario}"
    directory.mkdir()
    profile = args.profile / f"{name}-{scenario}.pstats" if args.profile else None
    system = SYSTEM_CLASSES[name](processes, directory, code, profile)
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


def ms(us: float) -> str:
    return f"{us / 1000:.1f}" if us < 100_000 else f"{us / 1000:.0f}"


def report(results: list[Result], header: dict[str, Any]) -> str:
    """The readable tables: deliveries, their CPU, idle connections, then any problems."""
    out = [header_line(header), ""]
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
    for r in delivery:
        if sides_pct := r.figures["side_cpu_pct"]:
            sides = ", ".join(f"{role} {pct:.0f} %" for role, pct in sides_pct.items())
            out.append(f"{r.system} / {r.scenario}: {sides} of one core besides the server")
    for r in results:
        if r.problems:
            out.append(f"PROBLEMS {r.system} / {r.scenario}: " + "; ".join(r.problems))
    return "\n".join(out)


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
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run exchange-stream under cProfile: pstats in DIR, one a run",
    )
    GatewayCode.add_options(parser)
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
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: the ``finally`` clauses stop every child."""
    progress("peers.py: SIGTERM, stopping")
    sys.exit(143)


def peer_versions(systems: list[str]) -> dict[str, str]:
    """nginx's and nchan's versions, when nchan is in the run."""
    if "nchan" not in systems:
        return {}
    return {
        "nginx": command_output("nginx", "-v").rpartition("/")[2],
        "nchan": command_output("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"),
    }


def main() -> int:
    args = parse_arguments()
    if not {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        raise BenchmarkError(f"needs CPUs {SERVER_CPU} and {LOAD_CPU}")
    os.sched_setaffinity(0, {LOAD_CPU})  # The publisher (this process) runs with the load.
    raise_fd_limit()  # Inherited by the servers and the load clients.
    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="peers-"))
    results: list[Result] = []
    try:
        with Processes() as processes:
            code = GatewayCode.chosen(args, workdir)
            header = run_header(code, **peer_versions(args.systems))
            progress(header_line(header))
            binary = compile_wsload(workdir)
            for name in args.systems:
                for scenario in args.scenarios:
                    result = run_scenario(name, scenario, args, processes, binary, workdir, code)
                    results.append(result)
    finally:
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
