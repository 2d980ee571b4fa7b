"""The Redis mesh driven by hand: fake connections (StringTransport), a fake clock, RESP bytes
written by the test. Pins reconnect with backoff, resubscribe without duplicates, and that a
publish fails at once while the mesh is down."""

import json
from dataclasses import dataclass

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from exchange_stream.adapters.redis_mesh import RedisMesh
from exchange_stream.adapters.redis_protocol import SubscriberConnection
from exchange_stream.adapters.redis_wire import decode_wire, encode_wire
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.meshurl import RedisAddress
from exchange_stream.core.publication import MeshOutcomeUnknown, MeshUnavailable, Publication
from exchange_stream.interfaces import IMesh
from tests.support import MemoryClient, memory_gateway, stub_request


def bulk(*items) -> bytes:
    """A RESP multi-bulk reply."""
    out = [b"*%d\r\n" % len(items)]
    for item in items:
        if isinstance(item, int):
            out.append(b":%d\r\n" % item)
        else:
            data = item if isinstance(item, bytes) else item.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@dataclass
class Connection:
    protocol: object
    transport: StringTransport

    @property
    def subscriber(self) -> bool:
        # ClientService wraps protocols in a proxy; look at what it wraps.
        return isinstance(getattr(self.protocol, "_protocol", self.protocol), SubscriberConnection)

    def written(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def lose(self):
        self.protocol.connectionLost(Failure(ConnectionDone()))


class FakeEndpoint:
    def __init__(self):
        self.connections: list[Connection] = []
        self.refuse = False

    def connect(self, factory):
        if self.refuse:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append(Connection(protocol, transport))
        return succeed(protocol)

    def latest(self, subscriber: bool) -> Connection:
        return [c for c in self.connections if c.subscriber == subscriber][-1]


class Receiver:
    def __init__(self):
        self.got = []

    def receive(self, channel, publication):
        self.got.append((channel, publication))


@pytest.fixture
def setup():
    """A started mesh whose self-check heartbeat subscription is confirmed and out of the way."""
    clock, endpoint = Clock(), FakeEndpoint()
    mesh = RedisMesh("redis://127.0.0.1:6399/0", reactor=clock, endpoint=endpoint)
    mesh.startService()
    subscriber = endpoint.latest(subscriber=True)
    assert subscriber.written() == bulk("SUBSCRIBE", mesh.self_check.channel)
    subscriber.protocol.dataReceived(bulk("subscribe", mesh.self_check.channel, 1))
    yield mesh, clock, endpoint
    mesh.stopService()


def test_mesh_provides_the_interface(setup):
    mesh, _, _ = setup
    assert verifyObject(IMesh, mesh)
    assert mesh.available and mesh.receiving


def test_subscribe_waits_for_the_confirmation_and_messages_reach_the_receiver(setup):
    mesh, _, endpoint = setup
    subscriber = endpoint.latest(subscriber=True)
    receiver, fired = Receiver(), []
    mesh.subscribe("ex:a", receiver).addCallback(fired.append)
    assert subscriber.written() == bulk("SUBSCRIBE", "ex:a")
    assert fired == []
    subscriber.protocol.dataReceived(bulk("subscribe", "ex:a", 1))
    assert fired == [None]
    subscriber.protocol.dataReceived(bulk("message", "ex:a", b'{"x":"1.10"}'))
    subscriber.protocol.dataReceived(bulk("message", "ex:a", b"\x00b\x00\xff"))
    subscriber.protocol.dataReceived(bulk("message", "ex:a", b"123"))  # not a number: text
    assert receiver.got == [
        ("ex:a", Publication(b'{"x":"1.10"}')),
        ("ex:a", Publication(b"\x00\xff", binary=True)),
        ("ex:a", Publication(b"123")),
    ]


def test_reconnects_with_backoff_and_resubscribes_everything_once(setup):
    mesh, clock, endpoint = setup
    old = endpoint.latest(subscriber=True)
    receiver = Receiver()
    for channel in ("ex:a", "ex:b"):
        mesh.subscribe(channel, receiver)
        old.protocol.dataReceived(bulk("subscribe", channel, 1))
    mesh.unsubscribe("ex:b", receiver)
    endpoint.refuse = True
    old.lose()
    assert not mesh.receiving
    mesh.subscribe("ex:c", receiver)  # wanted while down: kept for the reconnect
    clock.advance(0.1)
    assert endpoint.latest(subscriber=True) is old  # backing off, not spinning
    endpoint.refuse = False
    for _ in range(20):
        clock.advance(1)
    new = endpoint.latest(subscriber=True)
    assert new is not old and not mesh.receiving  # connected, not yet confirmed
    heartbeat = mesh.self_check.channel
    assert new.written() == bulk("SUBSCRIBE", heartbeat, "ex:a", "ex:c")
    new.protocol.dataReceived(bulk("subscribe", heartbeat, 1) + bulk("subscribe", "ex:a", 2))
    assert not mesh.receiving
    new.protocol.dataReceived(bulk("subscribe", "ex:c", 3))
    answer_publishes(endpoint.latest(subscriber=False))  # Redis answered the heartbeats
    assert mesh.receiving
    for _ in range(20):
        clock.advance(1)
    assert new.written() == b""  # once, not again
    assert mesh.reconnects == 1


def test_a_subscribe_is_answered_only_once_redis_confirmed_it_even_across_a_reconnect(setup):
    mesh, _, endpoint = setup
    fired = []
    mesh.subscribe("ex:a", Receiver()).addCallback(fired.append)
    endpoint.latest(subscriber=True).lose()
    assert fired == []  # not in effect: it waits for the resubscription's confirmation
    mesh.confirmed(b"subscribe", b"ex:a")
    assert fired == [None]


def test_publish_while_down_fails_at_once(setup):
    mesh, _, endpoint = setup
    endpoint.refuse = True
    endpoint.latest(subscriber=False).lose()
    assert not mesh.available
    failures = []
    mesh.publish("ex:a", Publication(b"x")).addErrback(failures.append)
    assert failures[0].check(MeshUnavailable)


def test_publish_counts_nodes_and_snapshot_goes_with_it_atomically(setup):
    mesh, _, endpoint = setup
    commands = endpoint.latest(subscriber=False)
    results = []
    mesh.publish("ex:a", Publication(b"m")).addCallback(results.append)
    assert commands.written() == bulk("PUBLISH", "ex:a", "m")
    commands.protocol.dataReceived(b":3\r\n")
    mesh.publish("ex:a", Publication(b"m2"), Publication(b"s2")).addCallback(results.append)
    sent = commands.written()
    assert sent.startswith(b"*16\r\n$7\r\nEVALSHA\r\n")  # the publish script, one step
    assert b"es:{ex:a}:snapshot" in sent and b"\r\ns2\r\n" in sent and b"\r\nm2\r\n" in sent
    commands.protocol.dataReceived(b"*2\r\n$3\r\nnew\r\n$4\r\n0  0\r\n")
    assert [published.nodes for published in results] == [3, 0]


def test_a_publish_with_no_reply_times_out_and_drops_the_connection(setup):
    mesh, clock, endpoint = setup
    commands = endpoint.latest(subscriber=False)
    failures = []
    mesh.publish("ex:a", Publication(b"m")).addErrback(failures.append)
    clock.advance(mesh.publish_timeout + 0.1)
    assert failures[0].check(MeshOutcomeUnknown)  # written: it may have run
    assert commands.transport.disconnecting


def test_snapshot_reads_the_key_and_is_none_while_down(setup):
    mesh, _, endpoint = setup
    commands = endpoint.latest(subscriber=False)
    results = []
    mesh.snapshot("ex:a").addCallback(results.append)
    assert commands.written() == bulk("GET", "es:{ex:a}:snapshot")
    commands.protocol.dataReceived(b"$3\r\nabc\r\n")
    mesh.snapshot("ex:b").addCallback(results.append)
    commands.protocol.dataReceived(b"$-1\r\n")
    endpoint.refuse = True
    commands.lose()
    mesh.snapshot("ex:c").addCallback(results.append)
    assert results == [Publication(b"abc"), None, None]


@pytest.mark.parametrize(
    "publication",
    [
        Publication(b"{}"),
        Publication(b""),
        Publication(b"\x00odd text"),
        Publication(b"\x00", binary=True),
    ],
)
def test_wire_format_round_trips(publication):
    assert decode_wire(encode_wire(publication)) == publication


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://10.0.0.5:6380/2", RedisAddress(host="10.0.0.5", port=6380, db=2)),
        ("redis://:p%40ss@host/0", RedisAddress(host="host", password="p@ss")),
        (
            "redis://user:pw@host:1/3",
            RedisAddress(host="host", port=1, db=3, username="user", password="pw"),
        ),
        ("rediss://host", RedisAddress(host="host", tls=True)),
        ("unix:///run/redis.sock?db=4", RedisAddress(path="/run/redis.sock", db=4)),
    ],
)
def test_redis_urls(url, expected):
    assert RedisAddress.from_url(url) == expected


@pytest.mark.parametrize("url", ["http://x", "redis://host/notanumber", "unix://"])
def test_bad_redis_urls(url):
    with pytest.raises(ValueError):
        RedisAddress.from_url(url)


def test_password_never_shows_in_repr():
    assert "secret" not in repr(RedisAddress.from_url("redis://:secret@host/0"))


def test_a_node_that_does_not_hear_its_heartbeat_is_deaf_and_resubscribes(setup):
    mesh, clock, endpoint = setup
    commands, subscriber = endpoint.latest(subscriber=False), endpoint.latest(subscriber=True)
    heartbeat = mesh.self_check.channel
    clock.advance(2)  # first beat
    assert commands.written() == bulk("PUBLISH", heartbeat, "1")
    commands.protocol.dataReceived(b":1\r\n")
    subscriber.protocol.dataReceived(bulk("message", heartbeat, "1"))  # heard: healthy
    for sequence in (2, 3, 4, 5):  # accepted by Redis, never heard back
        clock.advance(2)
        commands.protocol.dataReceived(b":1\r\n")
        assert mesh.receiving, sequence
    clock.advance(2)  # beat 2 is now more than 6 s old
    assert not mesh.receiving and mesh.self_check.deaf_events == 1
    assert subscriber.transport.disconnecting  # dropped, to resubscribe from scratch


def test_a_redis_that_does_not_answer_makes_the_node_unhealthy_until_it_does(clock):
    """Heartbeats neither accepted nor heard for more than 2 s: Redis is stalled, the node is
    not receiving and /healthz fails; no deafness is claimed and nothing is restarted; the
    answers that come at last make it healthy again."""
    endpoint = FakeEndpoint()
    mesh = RedisMesh("redis://127.0.0.1:6399/0", reactor=clock, endpoint=endpoint)
    gateway = memory_gateway(clock, GatewayConfig(ping_interval=0), mesh=mesh)
    api = StubTreq(gateway.api_resource())
    commands, subscriber = endpoint.latest(subscriber=False), endpoint.latest(subscriber=True)
    for channel in (mesh.self_check.channel, "es:control"):
        subscriber.protocol.dataReceived(bulk("subscribe", channel, 1))
    clock.advance(2)  # beat 1 sent; Redis says nothing from now on
    assert stub_request(api, "GET", "http://api/healthz")[0] == 200
    clock.advance(1.9)
    assert mesh.receiving  # 1.9 s without an answer is allowed
    clock.advance(0.2)
    status, _, body = stub_request(api, "GET", "http://api/healthz")
    assert status == 503 and json.loads(body)["receiving"] is False
    for _ in range(5):  # 10 s more of silence: still stalled, never called deaf
        clock.advance(2)
    assert not mesh.receiving and mesh.self_check.deaf_events == 0
    assert not subscriber.transport.disconnecting
    answer_publishes(commands)  # Redis runs what waited
    assert mesh.receiving
    assert stub_request(api, "GET", "http://api/healthz")[0] == 200


def test_no_deafness_claimed_while_heartbeats_cannot_be_published(setup):
    mesh, clock, endpoint = setup
    endpoint.refuse = True
    endpoint.latest(subscriber=False).lose()
    for _ in range(10):
        clock.advance(2)
    assert mesh.self_check.deaf_events == 0


def answer_publishes(connection: Connection) -> None:
    """Redis accepts every PUBLISH written on the command connection (no one hears it)."""
    for _ in range(connection.written().count(b"PUBLISH\r\n")):
        connection.protocol.dataReceived(b":0\r\n")


def test_a_deaf_gateway_is_unhealthy_then_resubscribes_and_delivers_again(clock):
    """The whole self-check: heartbeats accepted but not heard for longer than the timeout make
    /healthz fail and drop the subscriber connection; the reconnect (after backoff) subscribes
    every channel again in one command; hearing itself again makes the node healthy, and a
    client's channel delivers as before."""
    endpoint = FakeEndpoint()
    mesh = RedisMesh("redis://127.0.0.1:6399/0", reactor=clock, endpoint=endpoint)
    gateway = memory_gateway(clock, GatewayConfig(ping_interval=0), mesh=mesh)
    api = StubTreq(gateway.api_resource())
    commands, subscriber = endpoint.latest(subscriber=False), endpoint.latest(subscriber=True)
    heartbeat = mesh.self_check.channel
    for channel in (heartbeat, "es:control"):
        subscriber.protocol.dataReceived(bulk("subscribe", channel, 1))
    client = MemoryClient(gateway)
    client.send({"op": "subscribe", "channel": "BTCUSDT@depth"})
    subscriber.protocol.dataReceived(bulk("subscribe", "ex:BTCUSDT@depth", 1))
    assert commands.written() == bulk("GET", "es:{ex:BTCUSDT@depth}:snapshot")
    commands.protocol.dataReceived(b"$-1\r\n")  # no snapshot kept
    assert client.messages() == [{"result": True}]
    assert stub_request(api, "GET", "http://api/healthz")[0] == 200

    for _ in range(4):  # t = 2 .. 8: beats accepted, none heard; the first is 6 s old
        clock.advance(2)
        answer_publishes(commands)
    assert stub_request(api, "GET", "http://api/healthz")[0] == 200  # 6 s are allowed
    clock.advance(2)  # t = 10: the first beat is 8 s old
    answer_publishes(commands)
    assert stub_request(api, "GET", "http://api/healthz")[0] == 503
    assert subscriber.transport.disconnecting and mesh.self_check.deaf_events == 1
    subscriber.lose()

    for _ in range(3):  # the backoff
        clock.advance(1)
        answer_publishes(commands)
    fresh = endpoint.latest(subscriber=True)
    assert fresh is not subscriber
    assert fresh.written() == bulk("SUBSCRIBE", heartbeat, "es:control", "ex:BTCUSDT@depth")
    for channel in (heartbeat, "es:control", "ex:BTCUSDT@depth"):
        fresh.protocol.dataReceived(bulk("subscribe", channel, 1))
    # each channel's snapshot is read again: it may have changed meanwhile
    channels = (heartbeat, "es:control", "ex:BTCUSDT@depth")
    assert commands.written() == b"".join(bulk("GET", f"es:{{{c}}}:snapshot") for c in channels)
    commands.protocol.dataReceived(b"$-1\r\n" * 3)
    assert stub_request(api, "GET", "http://api/healthz")[0] == 503  # not heard itself yet
    clock.advance(2)
    assert commands.written() == bulk("PUBLISH", heartbeat, "7")  # the beat at t = 14
    commands.protocol.dataReceived(b":1\r\n")
    fresh.protocol.dataReceived(bulk("message", heartbeat, "7"))
    assert stub_request(api, "GET", "http://api/healthz")[0] == 200
    fresh.protocol.dataReceived(bulk("message", "ex:BTCUSDT@depth", '{"after":"heal"}'))
    assert client.messages() == [{"after": "heal"}]


def test_a_wrong_password_keeps_the_mesh_down_and_retrying_with_backoff(clock):
    """AUTH refused: the connection is dropped, publishing fails at once, and the mesh tries
    again later and later, never every turn."""
    endpoint = FakeEndpoint()
    mesh = RedisMesh("redis://:nope@127.0.0.1:6399/0", reactor=clock, endpoint=endpoint)
    mesh.startService()
    attempts = []
    for _ in range(3):
        commands = endpoint.latest(subscriber=False)
        attempts.append(clock.seconds())
        assert commands.written() == bulk("AUTH", "nope")
        commands.protocol.dataReceived(b"-WRONGPASS invalid username-password pair\r\n")
        assert commands.transport.disconnecting and not mesh.available
        commands.lose()
        failures = []
        mesh.publish("ex:a", Publication(b"x")).addErrback(failures.append)
        assert failures[0].check(MeshUnavailable)
        for _ in range(100):  # the next attempt, within 10 s
            if endpoint.latest(subscriber=False) is not commands:
                break
            clock.advance(0.1)
    assert attempts[1] - attempts[0] > 0.5 and attempts[2] - attempts[1] > 0.5  # backing off
    mesh.stopService()


def test_an_unreachable_redis_is_named_in_warnings_repeated_with_back_off():
    """ClientService only logs "Scheduling retry ... HostnameEndpoint" at info level: the mesh
    warns, naming Redis and the error, at the 1st, 2nd, 4th, 8th... failure in a row."""
    from twisted.internet.defer import fail, succeed
    from twisted.internet.error import ConnectionRefusedError
    from twisted.internet.interfaces import IStreamClientEndpoint
    from twisted.logger import LogLevel, capturedLogs
    from zope.interface import implementer
    from zope.interface.verify import verifyObject

    from exchange_stream.adapters.redis_protocol import ReportingEndpoint

    @implementer(IStreamClientEndpoint)
    class Refusing:
        up = False

        def connect(self, factory):
            return succeed("protocol") if self.up else fail(ConnectionRefusedError())

    inner = Refusing()
    endpoint = ReportingEndpoint(
        inner, "RedisAddress(redis 127.0.0.1:1 db=0) (command connection)", "publishes wait"
    )
    assert verifyObject(IStreamClientEndpoint, endpoint)
    with capturedLogs() as events:
        for _ in range(9):
            endpoint.connect(None).addErrback(lambda f: None)
        inner.up = True
        endpoint.connect(None)
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert [e["count"] for e in warnings] == [1, 2, 4, 8]
    assert "127.0.0.1:1" in warnings[0]["what"] and "refused" in warnings[0]["why"].lower()
    assert warnings[0]["meanwhile"] == "publishes wait"  # what the outage means, per role
    (back,) = [e for e in events if e["log_level"] == LogLevel.info]
    assert back["count"] == 9 and endpoint.failures == 0


def test_a_heartbeat_whose_outcome_is_unknown_still_counts_as_a_stall():
    """Redis took it and never answered within the publish deadline: still stalled, not
    forgotten as if the connection were down (which would flip /healthz back to 200)."""
    from twisted.python.failure import Failure

    from exchange_stream.services.selfcheck import SelfCheck

    clock = Clock()
    pending = []

    class Mesh:
        def subscribe(self, channel, receiver):
            pass

        def publish(self, channel, publication):
            from twisted.internet.defer import Deferred

            pending.append(Deferred())
            return pending[-1]

    check = SelfCheck(Mesh(), lambda: None, clock)
    check.beat()
    clock.advance(5)
    pending[0].errback(Failure(MeshOutcomeUnknown("no answer in time")))
    assert check.stalled
    check.beat()
    pending[1].errback(Failure(MeshUnavailable("down")))
    assert check.stalled  # the first one still stands
