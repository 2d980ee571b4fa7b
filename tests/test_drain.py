"""Shutting down politely, on a fake clock: clients are sent away (4200) at random moments of
the drain window, new clients and publishes are refused meanwhile, and the drain ends when
everyone has gone or the window and the closing timeout have passed."""

import json
import random

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from zope.interface import implementer

from exchange_stream.core.config import GatewayConfig
from exchange_stream.interfaces import IClientConnection
from exchange_stream.services.connections import Drain
from tests.support import MemoryClient, memory_gateway, stub_request


@implementer(IClientConnection)
class Connection:
    def __init__(self, clock):
        self._clock = clock
        self.is_closed = Deferred()
        self.notices = []
        self.closed = None  # (time, code, reason)

    def send_reply(self, reply):
        self.notices.append(json.loads(reply))

    def close(self, code, reason):
        self.closed = (self._clock.seconds(), code, reason)


def test_every_client_is_sent_away_at_its_own_moment_of_the_window(clock):
    """Each client gets a reconnect notice (a delay of up to a second) and a 4200 close at a
    random moment of the window, not all at once; the drain fires when all have closed."""
    connections = [Connection(clock) for _ in range(20)]
    drain = Drain(lambda: connections, clock, window=5.0, chance=random.Random(7))
    done = []
    drain.start().addCallback(done.append)
    assert drain.draining and all(c.closed is None for c in connections)
    for _ in range(50):
        clock.advance(0.1)
    times = sorted(c.closed[0] for c in connections)
    assert times[0] >= 0 and times[-1] <= 5.0
    assert times[-1] - times[0] > 2.5 and len(set(times)) > 10  # spread over the window
    for connection in connections:
        (notice,) = connection.notices
        assert notice["event"] == "notice" and notice["data"]["type"] == "reconnect"
        delay = notice["data"]["reconnectInMs"]
        assert 0 <= delay <= 1000
        _, code, reason = connection.closed
        assert code == 4200 and reason == f"server shutting down; reconnect in {delay} ms"
    assert done == []
    for connection in connections:
        connection.is_closed.callback(None)
    assert done == [[(True, None)] * 20]


def test_the_drain_ends_after_the_window_and_the_closing_timeout_whoever_is_left(clock):
    """A client that never completes its close does not hold the shutdown beyond
    window + close_timeout."""
    gone, stuck = Connection(clock), Connection(clock)
    drain = Drain(lambda: [gone, stuck], clock, window=3.0)
    done = []
    drain.start().addCallback(done.append)
    clock.advance(3.0)
    gone.is_closed.callback(None)
    clock.advance(Drain.close_timeout - 0.01)
    assert done == []
    clock.advance(0.02)
    assert len(done) == 1 and stuck.closed is not None


def test_a_draining_gateway_refuses_clients_and_publishes_and_sends_its_clients_away(clock):
    """Through the gateway: during the drain the API answers 503 (104) and /healthz 503, a new
    client's handshake 503; each connected client gets its notice and close frame within the
    window, and the drain is over when the last has closed."""
    gateway = memory_gateway(clock, GatewayConfig(drain_seconds=2.0, ping_interval=0))
    clients = [MemoryClient(gateway, port) for port in range(5000, 5010)]
    api = StubTreq(gateway.api_resource())
    done = []
    gateway.drain().addCallback(lambda _: done.append(clock.seconds()))
    body = json.dumps({"c": "ex:BTCUSDT@depth", "d": "{}"}).encode()
    status, _, answer = stub_request(api, "POST", "http://api/v1/mesh/publish", data=body)
    assert (status, json.loads(answer)["E"]["c"]) == (503, 104)
    status, _, answer = stub_request(api, "GET", "http://api/healthz")
    assert (status, json.loads(answer)["status"]) == (503, "draining")
    assert MemoryClient(gateway, 6000).status == 503
    for _ in range(20):
        clock.advance(0.1)
        for client in clients:
            if client.frames() and client.close_code is not None:
                client.answer_close()
    for client in clients:
        assert client.close_code == 4200 and client.lost
    assert len(done) == 1 and round(done[0], 6) <= 2.0  # with the last client, in the window
    assert len(gateway.sessions) == 0
