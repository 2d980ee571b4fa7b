"""--workers: several processes accept on one port, joined through a real Redis."""

import contextlib
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from exchange_stream.adapters.workers import REPORT_FD, WorkerPool
from exchange_stream.core.config import GatewayConfig
from exchange_stream.services.figures import FIGURES
from tests.support import eventually, http, real_gateway


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in out.stdout.split()]


def test_two_workers_share_the_port_and_drain_together(tmp_path, redis_server):
    """Two processes accept on one port, both subscribe in Redis, and on SIGTERM every client
    of both is sent away with 4200 before the worker exits too."""
    options = ("--workers", "2", "--mesh", redis_server.url, "--drain-seconds", "0.3")
    with (
        real_gateway(tmp_path, *options) as (process, url, api, log),
        contextlib.ExitStack() as stack,
    ):
        port = url.split(":")[2].split("/")[0]
        deadline = time.monotonic() + 20
        while log.read_text().count(f"starting on {port}") < 2:  # the worker listens too
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        (worker,) = children_of(process.pid)
        clients = []
        for _ in range(40):
            client = stack.enter_context(connect(url))
            client.send('{"op":"subscribe","channel":"BTCUSDT@ticker"}')
            assert json.loads(client.recv(5)) == {"result": True}
            clients.append(client)
        # the kernel spread the connections over both processes: both subscribed in Redis
        assert redis_server.numsub("ex:BTCUSDT@ticker") == {"ex:BTCUSDT@ticker": 2}
        body = json.dumps({"c": "ex:BTCUSDT@ticker", "d": '[{"id":1}]'}).encode()
        status, answer = http("POST", f"{api}/v1/mesh/publish", body)
        assert (status, json.loads(answer)["r"]["s"]) == (200, 2)  # both processes listen
        assert all(json.loads(client.recv(5)) == [{"id": 1}] for client in clients)

        process.send_signal(signal.SIGTERM)

        def sent_away(client) -> int:
            assert json.loads(client.recv(5))["data"]["type"] == "reconnect"
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(5)
            return closed.value.rcvd.code

        with ThreadPoolExecutor(len(clients)) as pool:
            assert set(pool.map(sent_away, clients)) == {4200}
        process.wait(15)
        with pytest.raises(ProcessLookupError):
            for _ in range(50):
                time.sleep(0.1)
                os.kill(worker, 0)  # gone once it drained
        assert "Traceback" not in log.read_text()


def metric(api: str, name: str) -> float | None:
    _, text = http("GET", f"{api}/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_workers_report_to_the_first_process_and_one_that_dies_is_restarted(tmp_path, redis_server):
    """A worker's figures reach the first process's /metrics and /healthz through the report
    pipe; a killed worker is started again (its delays are tested on a fake clock below)."""
    options = ("--workers", "2", "--mesh", redis_server.url, "--drain-seconds", "1")
    with (
        real_gateway(tmp_path, *options) as (process, url, api, log),
        contextlib.ExitStack() as stack,
    ):

        def reporting() -> int:
            return json.loads(http("GET", f"{api}/healthz")[1])["processes"]["reporting"]

        eventually(lambda: reporting() == 2)  # the worker started and reports
        clients = [stack.enter_context(connect(url)) for _ in range(30)]
        # all 30, wherever the kernel put them, in the first process's figures
        eventually(lambda: metric(api, "exchange_stream_connections") == 30)
        assert metric(api, 'exchange_stream_process_up{process="1"}') == 1
        status, body = http("GET", f"{api}/healthz")
        assert status == 200
        assert json.loads(body)["processes"] == {"expected": 2, "reporting": 2}

        (worker,) = children_of(process.pid)
        os.kill(worker, signal.SIGKILL)
        eventually(lambda: metric(api, 'exchange_stream_process_up{process="1"}') == 0)
        assert http("GET", f"{api}/healthz")[0] == 200  # the first process still serves
        for client in clients:  # while the worker waits for its restart
            client.close()
        eventually(lambda: metric(api, "exchange_stream_connections") == 0)
        (restarted,) = eventually(lambda: [pid for pid in children_of(process.pid)
                                           if pid != worker])  # fmt: skip
        eventually(lambda: metric(api, 'exchange_stream_process_up{process="1"}') == 1)
        assert restarted != worker and "restarting worker 1" in log.read_text()
        assert metric(api, "exchange_stream_connections") == 0  # the new worker's report too


class FakeReactor(Clock):
    """A clock that records the worker processes it is asked to start."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env, childFDs):
        self.spawned.append(protocol)
        return StubProcess()


def report(**figures) -> bytes:
    line = dict.fromkeys(FIGURES, 0) | figures
    return json.dumps(line).encode() + b"\n"


def test_worker_reports_are_checked_and_counters_survive_a_restart():
    """On a fake clock: partial and foreign report lines are ignored, a worker that dies young
    is restarted after 2 s (not 1), counters never go back, a silent worker is counted, and
    stopping cancels the pending restart."""
    reactor = FakeReactor()
    listening = Deferred()
    pool = WorkerPool(GatewayConfig(mesh="redis://127.0.0.1:6379/0"), 2, reactor)
    pool.share(lambda: listening)
    pool.startService()
    listening.callback(StubPort())
    (worker,) = reactor.spawned
    worker.childDataReceived(REPORT_FD, report(messages_delivered=10, connections=4)[:20])
    assert pool.reports() == [None]  # half a line: nothing yet
    worker.childDataReceived(REPORT_FD, report(messages_delivered=10, connections=4)[20:])
    worker.childDataReceived(REPORT_FD, b"not json\n[1, 2]\n" + b'{"connections": "x"}\n')
    assert pool.reports()[0]["connections"] == 4  # the garbage after it changed nothing
    assert pool.counted("messages_delivered") == 10

    worker.processEnded(Failure(ProcessDone(0)))
    assert pool.reports() == [None] and pool.counted("messages_delivered") == 10  # kept
    reactor.advance(1.9)
    assert len(reactor.spawned) == 1  # died young: restarted after 2 s, not 1
    reactor.advance(0.1)
    restarted = reactor.spawned[1]
    restarted.childDataReceived(REPORT_FD, report(messages_delivered=3))
    assert pool.counted("messages_delivered") == 13  # never backwards

    reactor.advance(11)  # alive, heard nothing for 11 s: silent
    assert pool.silent() == 1
    pool.stopService()
    assert reactor.getDelayedCalls() == []  # no restart left behind


class StubProcess:
    signals: list

    def signalProcess(self, name):
        self.signals = [*getattr(self, "signals", []), name]


class StubPort:
    def fileno(self):
        return 99

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 6790)
