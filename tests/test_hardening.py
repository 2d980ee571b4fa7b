"""Limits, slow consumers, dead peers, origins and shutdown, end to end on real sockets."""

import contextlib
import json
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from exchange_stream.config import GatewayConfig
from tests.support import Client, ClientProtocol, publish, start_gateway
from tests.test_installed import http, real_gateway
from tests.test_redis_mesh import until


async def handshake(
    port: int, path: str = "/exchange-stream", **factory_args
) -> tuple[Client | None, int | None]:
    """Connect; return (client, None) or (None, the HTTP status that refused us)."""
    client = Client()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}", **factory_args)
    factory.protocol = ClientProtocol
    factory.client = client
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    try:
        await client.opened
    except ConnectionError as refused:
        status = re.search(r"upgrade failed \[(\d+)\]", str(refused))
        return None, int(status.group(1)) if status else None
    return client, None


@pytest_twisted.ensureDeferred
async def test_connections_per_address_and_per_node(auth_backend):
    running = await start_gateway(
        GatewayConfig(auth_url=auth_backend.url, max_connections=3, max_connections_per_ip=2)
    )
    try:
        first, _ = await handshake(running.ws_port)
        _second, _ = await handshake(running.ws_port)
        assert (await handshake(running.ws_port))[1] == 429  # a third from 127.0.0.1
        await first.close()
        await until(lambda: len(running.gateway.sessions) == 1)
        third, _ = await handshake(running.ws_port)
        assert third is not None  # a place came free
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_node_limit_answers_503(auth_backend):
    running = await start_gateway(
        GatewayConfig(auth_url=auth_backend.url, max_connections=2, max_connections_per_ip=10)
    )
    try:
        await handshake(running.ws_port)
        await handshake(running.ws_port)
        assert (await handshake(running.ws_port))[1] == 503
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_allowed_origins(auth_backend):
    running = await start_gateway(
        GatewayConfig(
            auth_url=auth_backend.url,
            allowed_origins="https://app.example.com, https://*.example.org",
        )
    )
    try:
        assert (await handshake(running.ws_port, origin="https://app.example.com"))[0]
        assert (await handshake(running.ws_port, origin="https://m.example.org"))[0]
        assert (await handshake(running.ws_port))[0]  # no Origin: not a browser
        # Autobahn refuses the handshake with 400
        assert (await handshake(running.ws_port, origin="https://evil.example.net"))[1] == 400
        assert (await handshake(running.ws_port, origin="https://app.example.com.evil"))[1] == 400
        assert (await handshake(running.ws_port, origin="null"))[1] == 400
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_a_dead_peer_is_dropped_by_the_heartbeat(auth_backend):
    running = await start_gateway(
        GatewayConfig(auth_url=auth_backend.url, ping_interval=0.5, ping_timeout=1.0)
    )
    try:
        alive, dead = await running.connect(), await running.connect()
        dead.protocol.transport.pauseProducing()  # stops reading: never answers a ping
        await until(lambda: len(running.gateway.sessions) == 1, timeout=5)
        assert (await alive.request({"op": "ping"}))["op"] == "pong"
    finally:
        await running.stop()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_is_closed_and_others_keep_up(auth_backend):
    """One client stops reading while 48 MB are published to its channel: it is closed
    (4100, or dropped when it cannot even read that), its backlog freed, and the others
    receive every message."""
    running = await start_gateway(
        GatewayConfig(auth_url=auth_backend.url, max_backlog=1024 * 1024, ping_interval=0)
    )
    try:
        fast = [await running.connect() for _ in range(3)]
        slow = await running.connect()
        for client in [*fast, slow]:
            await client.request({"op": "subscribe", "channel": "BTCUSDT@depth"})
        slow.protocol.transport.pauseProducing()
        before = rss_mib()
        payload = json.dumps({"pad": "x" * 64_000})
        received = [0] * len(fast)

        async def drain(index, client):
            while received[index] < 750:
                await client.next_raw(timeout=10)
                received[index] += 1

        draining = [ensureDeferred(drain(i, c)) for i, c in enumerate(fast)]  # reading now
        for _ in range(750):  # 48 MB
            status, _ = await publish(running.api_port, {"c": "ex:BTCUSDT@depth", "d": payload})
            assert status == 200
        for task in draining:
            await task
        assert received == [750] * len(fast)
        assert running.gateway.slow_consumers == 1
        await until(lambda: len(running.gateway.sessions) == len(fast))
        assert rss_mib() - before < 40  # the slow client's 48 MB were never buffered
    finally:
        await running.stop()


def test_sigterm_drains_clients_and_refuses_publishes(tmp_path):
    with (
        real_gateway(tmp_path, "--drain-seconds", "1.5") as (process, url, api, log),
        contextlib.ExitStack() as stack,
    ):
        clients = [stack.enter_context(sync_connect(url)) for _ in range(20)]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        status, body = http("POST", f"{api}/v1/mesh/publish", b'{"c":"ex:x","d":"{}"}')
        assert (status, json.loads(body)["E"]["c"]) == (503, 104)
        assert http("GET", f"{api}/healthz")[0] == 503

        def sent_away(client) -> float:
            notice = json.loads(client.recv(5))
            assert notice["event"] == "notice" and notice["data"]["type"] == "reconnect"
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(5)
            assert closed.value.rcvd.code == 4200
            return time.monotonic() - started

        with ThreadPoolExecutor(len(clients)) as pool:  # each client waits on its own
            close_times = list(pool.map(sent_away, clients))
        # twistd stops cleanly, then ends itself with the signal it got, as a daemon should
        assert process.wait(10) in (0, -signal.SIGTERM)
        assert "Server Shut Down." in log.read_text()
        assert max(close_times) - min(close_times) > 0.3  # spread over the window
        assert max(close_times) < 5
        assert "Traceback" not in log.read_text()
