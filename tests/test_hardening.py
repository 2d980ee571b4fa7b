"""Limits, slow consumers, dead peers, origins and shutdown, end to end on real sockets."""

import contextlib
import json
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from exchange_stream.core.config import GatewayConfig
from tests.support import (
    eventually,
    handshake,
    http,
    http_client,
    publish,
    real_gateway,
    start_gateway,
    until,
)


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
    """Over TCP: a stock client's pongs keep it; one that stopped reading is dropped (the
    intervals are in test_heartbeat.py, on a fake clock)."""
    running = await start_gateway(
        GatewayConfig(auth_url=auth_backend.url, ping_interval=0.1, ping_timeout=0.2)
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
        assert running.gateway.factory.slow_consumers == 1
        await until(lambda: len(running.gateway.sessions) == len(fast))
        assert rss_mib() - before < 40  # the slow client's 48 MB were never buffered
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_the_backlog_bound_holds_within_one_reactor_turn(auth_backend):
    """10 MB published to clients that stopped reading, all in one reactor turn (one batch,
    one Redis read): each is closed with 4100 instead of being buffered 10 MB for."""
    running = await start_gateway(
        GatewayConfig(auth_url=auth_backend.url, max_backlog=1024 * 1024, ping_interval=0)
    )
    try:
        stalled = [await running.connect() for _ in range(5)]
        for client in stalled:
            await client.request({"op": "subscribe", "channel": "BTCUSDT@depth"})
            client.protocol.transport.pauseProducing()
        before = rss_mib()
        payload = json.dumps({"pad": "x" * 100_000}).encode()
        for _ in range(100):  # in one turn, as a batch publish would
            running.gateway.hub.deliver("ex:BTCUSDT@depth", payload)
        assert running.gateway.factory.slow_consumers == len(stalled)
        assert rss_mib() - before < 30  # not 5 x 10 MB
    finally:
        await running.stop()


def test_sigterm_drains_clients_and_refuses_publishes(tmp_path):
    """The installed twistd on SIGTERM: publishes and /healthz answer 503 while every client
    gets its reconnect notice and a 4200 close, then it exits cleanly (the window and its
    spread are in test_drain.py, on a fake clock)."""
    with (
        real_gateway(tmp_path, "--drain-seconds", "0.5") as (process, url, api, log),
        contextlib.ExitStack() as stack,
    ):
        clients = [stack.enter_context(sync_connect(url)) for _ in range(20)]
        process.send_signal(signal.SIGTERM)
        eventually(lambda: http("GET", f"{api}/healthz")[0] == 503, timeout=5, step=0.01)
        status, body = http("POST", f"{api}/v1/mesh/publish", b'{"c":"ex:x","d":"{}"}')
        assert (status, json.loads(body)["E"]["c"]) == (503, 104)

        def sent_away(client) -> int:
            notice = json.loads(client.recv(5))
            assert notice["event"] == "notice" and notice["data"]["type"] == "reconnect"
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(5)
            return closed.value.rcvd.code

        with ThreadPoolExecutor(len(clients)) as pool:  # each client waits on its own
            assert set(pool.map(sent_away, clients)) == {4200}
        # twistd stops cleanly, then ends itself with the signal it got, as a daemon should
        assert process.wait(10) in (0, -signal.SIGTERM)
        assert "Server Shut Down." in log.read_text()
        assert "Traceback" not in log.read_text()


@pytest_twisted.ensureDeferred
async def test_op_flood_gets_code_8_then_1008(auth_backend):
    running = await start_gateway(GatewayConfig(auth_url=auth_backend.url, op_rate=5, op_burst=10))
    try:
        client = await running.connect()
        for index in range(10 + 21):
            client.send({"op": "ping", "id": index})
        answers = [await client.next() for _ in range(10 + 20)]
        assert [a.get("op") for a in answers[:10]] == ["pong"] * 10
        assert {a["code"] for a in answers[10:]} == {8}
        assert [a["id"] for a in answers[10:]] == list(range(10, 30))
        code, reason = await client.closed  # the 21st refusal in a row
        assert (code, reason) == (1008, "rate limit")
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_subscription_limit_is_code_7(auth_backend):
    running = await start_gateway(GatewayConfig(auth_url=auth_backend.url, max_subscriptions=2))
    try:
        client = await running.connect()
        await client.request({"op": "subscribe", "channels": ["A@depth", "B@depth"]})
        answer = await client.request({"op": "subscribe", "channel": "C@depth", "id": 3})
        assert answer == {"code": 7, "msg": "Too many subscriptions", "id": 3}
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_the_handshake_timeout_closes_a_silent_connection_and_spares_open_ones(auth_backend):
    """Over TCP: a connection that never sends its handshake is closed, and a WebSocket
    opened before it is still served afterwards (the timings are in test_timeouts.py)."""
    running = await start_gateway(
        GatewayConfig(auth_url=auth_backend.url, auth_timeout=0.05, handshake_timeout=0.1)
    )
    try:
        client = await running.connect()  # its handshake timer would have fired first
        closed = Deferred()

        class Silent(Protocol):
            def connectionLost(self, reason):
                closed.callback(None)

        await TCP4ClientEndpoint(reactor, "127.0.0.1", running.ws_port).connect(
            Factory.forProtocol(Silent)
        )
        await closed.addTimeout(5, reactor)
        assert (await client.request({"op": "ping", "id": 1}))["op"] == "pong"
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_plain_http_gets_no_status_page(running):
    response = await http_client().get(f"http://127.0.0.1:{running.ws_port}/exchange-stream")
    body = await treq.content(response)
    assert response.code >= 400 and b"Autobahn" not in body


@pytest_twisted.ensureDeferred
async def test_login_expiry_from_the_auth_back_end_end_to_end(running, auth_backend):
    """The back end's ``exp`` is epoch time, and the running gateway's clock agrees: the
    login ends then (the expiry's rules are in test_timeouts.py and test_session.py)."""
    auth_backend.user("short", 1001, expires=reactor.seconds() + 0.3)
    client = await running.connect()
    assert await client.request({"op": "auth", "token": "short"}) == {"result": True}
    await client.request({"op": "subscribe", "channels": ["@order", "BTCUSDT@depth"]})
    notice = await client.next(timeout=3)
    assert notice == {"event": "notice", "data": {"type": "auth_expired", "channels": ["@order"]}}
    assert await client.request({"op": "list"}) == {"result": ["BTCUSDT@depth"]}
