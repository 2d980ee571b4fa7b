"""The servers under test: exchange-stream (one node, or two on a throwaway Redis), nchan
and a plain ``websockets`` server; how each is started, where clients subscribe, how a
message is published to it. Servers run on ``SERVER_CPU``, the load on ``LOAD_CPU``.

Shared by ``peers.py`` and ``channels.py``.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from common import (
    EVERY_CPU,
    HERE,
    LOOPBACK,
    BenchmarkError,
    Gateway,
    GatewayCode,
    Processes,
    child_pids,
    command_output,
    free_port,
    read_line,
    start_gateway,
    start_redis,
    wait_until,
)
from publishers import (
    CHANNEL,
    PipelinedPublisher,
    http_publisher,
    http_request,
    websocket_publisher,
)

SERVER_CPU, LOAD_CPU = 0, 1
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


class System:
    """A server under test: how to start it, where clients connect, how to publish.

    Every process ``start`` runs is in ``running`` and ``stop`` ends them; ``measured_pid``
    is the one whose CPU and RSS are the server's. ``code`` and ``profile`` are for
    exchange-stream.
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
    cpu: int | None = SERVER_CPU
    subscribe = json.dumps({"op": "subscribe", "channel": CHANNEL}, separators=(",", ":"))
    reply = '{"result":true}'

    def start(self) -> None:
        gateway = self.start_node(self.name, profile=self.profile)
        self.ws_port, self.api_port = gateway.ws_port, gateway.api_port

    def start_node(self, name: str, *options: str, profile: Path | None = None) -> Gateway:
        """One ``twistd exchange-stream`` of ``code``, pinned to the server CPU, healthy."""
        gateway = start_gateway(
            self.processes, self.code, self.workdir, "--max-connections-per-ip", "100000",
            *options, name=name, cpu=self.cpu, profile=profile,
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


class ExchangeStreamWorkers(ExchangeStream):
    """One node with ``--workers 2`` on a throwaway Redis, on every core (nothing pinned but
    the load): the publisher posts to the first process's API, the clients are spread over
    both processes by the kernel. The figures are the first process's, with the worker's and
    Redis's CPU beside them."""

    name = "exchange-stream-workers"
    cpu = EVERY_CPU

    def start(self) -> None:
        redis = start_redis(self.processes, self.workdir, cpu=EVERY_CPU)
        self.running.append(redis.process)
        gateway = self.start_node(self.name, "--mesh", redis.url, "--workers", "2")
        self.ws_port, self.api_port = gateway.ws_port, gateway.api_port

        def worker_started() -> bool:
            return len(child_pids(gateway.process.pid)) == 1

        wait_until(worker_started, 15, "the second process of --workers 2", gateway.process)
        [worker] = child_pids(gateway.process.pid)
        self.roles = {"worker": worker, "redis": redis.process.pid}

    def side_pids(self) -> dict[str, int]:
        return self.roles

    def logs(self) -> list[Path]:
        return [self.log, self.workdir / "node-a.log"]


class Nchan(System):
    name = "nchan"
    sub_path = "/sub?id=BTCUSDT"
    workers = 1
    cpu: int | None = SERVER_CPU

    def config(self, nginx: str) -> str:
        """nginx.conf for ``workers`` workers; the comments say which settings matter and why."""
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fds = min(hard, 1_000_000)
        temp = "\n".join(
            f"  {kind}_temp_path {self.workdir}/{kind}_temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )  # all in the temporary directory: nginx creates and chowns these at start
        return f"""\
load_module {NCHAN_MODULE};
{worker_user(nginx)}
worker_processes {self.workers};
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
                command, cpu=self.cpu, stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )
        self.running.append(master)

        def listening() -> bool:
            workers = child_pids(master.pid)
            if len(workers) != self.workers:
                return False
            self.worker, *self.other_workers = workers
            socket.create_connection((LOOPBACK, self.ws_port), timeout=1).close()
            return True

        wait_until(listening, 15, f"nginx with {self.workers} worker(s)", master)

    @property
    def measured_pid(self) -> int:
        return self.worker  # The master only forks and waits.

    def side_pids(self) -> dict[str, int]:
        return {f"worker {n}": pid for n, pid in enumerate(self.other_workers, start=2)}

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
    owner instead, so the chown changes nothing on the machine. The group is named too (that
    user's own): with one name nginx takes a group of the same name, and Debian has no
    ``nobody`` group.
    """
    built = command_output(nginx, "-V")
    match = re.search(r"--http-client-body-temp-path=(\S+)", built)
    if os.geteuid() != 0 or match is None or not Path(match.group(1)).exists():
        return "# (user: the default)"
    owner = pwd.getpwuid(Path(match.group(1)).stat().st_uid)  # the chown sets the uid only
    return f"user {owner.pw_name} {grp.getgrgid(owner.pw_gid).gr_name};"


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


class NchanWorkers(Nchan):
    """nchan with two workers on every core (nothing pinned but the load), beside
    ``exchange-stream-workers``."""

    name = "nchan-workers"
    workers = 2
    cpu = EVERY_CPU


SYSTEM_CLASSES: dict[str, type[System]] = {
    cls.name: cls
    for cls in (
        ExchangeStream, ExchangeStreamRedis, ExchangeStreamWorkers, Nchan, NchanWorkers,
        WebsocketsPeer,
    )
}  # fmt: skip
