"""Op handling on one connection, with a fake connection, a fake clock and fake auth."""

import json

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.hub import Hub
from exchange_stream.core.publication import Publication
from exchange_stream.interfaces import IClientConnection
from exchange_stream.services.auth import (
    AuthFailed,
    AuthUnavailable,
    HttpAuthenticator,
    IAuthenticator,
    Identity,
)
from exchange_stream.services.memory_mesh import MemoryMesh
from exchange_stream.services.node import Node
from exchange_stream.services.session import Session


@implementer(IClientConnection)
class FakeConnection:
    def __init__(self):
        self.replies = []
        self.pushes = []
        self.closed_with = None
        self.is_closed = Deferred()

    def send_reply(self, reply):
        self.replies.append(json.loads(reply))

    def close(self, code, reason):
        self.closed_with = code

    def sendPreparedMessage(self, prepared):
        self.pushes.append(prepared)


@implementer(IAuthenticator)
class ManualAuth:
    """Each authenticate() returns a Deferred the test fires by hand."""

    def __init__(self):
        self.calls = []

    def authenticate(self, token):
        """The test fires the Deferred with a uid (or an Identity, for an expiry)."""
        self.calls.append((token, Deferred()))
        fired = self.calls[-1][1]
        return fired.addCallback(lambda who: who if isinstance(who, Identity) else Identity(who))


def make_session(authenticator=None, clock=None, **config):
    node = Node(Hub(lambda payload, binary: payload), MemoryMesh())
    connection = FakeConnection()
    session = Session(
        connection, node, authenticator or ManualAuth(), GatewayConfig(**config), clock or Clock()
    )
    return session, connection, node


def send(session, message):
    session.handle_frame(json.dumps(message).encode())


def test_fake_connection_provides_the_interface():
    assert verifyObject(IClientConnection, FakeConnection())


def test_ops_behind_a_pending_auth_wait_and_are_answered_in_order():
    auth = ManualAuth()
    session, connection, node = make_session(auth)
    send(session, {"op": "auth", "token": "t1", "id": 1})
    send(session, {"op": "subscribe", "channel": "@balance", "id": 2})
    send(session, {"op": "ping", "id": 3})
    assert connection.replies == []
    auth.calls[0][1].callback("1001")
    assert [r.get("id") for r in connection.replies] == [1, 2, 3]
    assert connection.replies[1] == {"result": True, "id": 2}
    assert node.hub.has_subscribers("ex:1001@balance")


def test_two_auths_in_flight_do_not_interleave():
    auth = ManualAuth()
    session, connection, _ = make_session(auth)
    send(session, {"op": "auth", "token": "first", "id": "a"})
    send(session, {"op": "auth", "token": "second", "id": "b"})
    assert [token for token, _ in auth.calls] == ["first"]  # the second waits its turn
    auth.calls[0][1].callback("1001")
    assert [token for token, _ in auth.calls] == ["first", "second"]
    auth.calls[1][1].callback("1002")
    assert connection.replies == [{"result": True, "id": "a"}, {"result": True, "id": "b"}]
    assert session.uid == "1002"


def test_queue_behind_a_slow_op_is_bounded():
    auth = ManualAuth()
    session, connection, _ = make_session(auth, op_burst=1000)
    send(session, {"op": "auth", "token": "t"})
    for index in range(Session.max_pending_ops + 5):
        send(session, {"op": "ping", "id": index})
    refused = [r for r in connection.replies if r.get("code") == 8]
    assert len(refused) == 6  # the auth and 31 pings are queued, the rest refused at once
    auth.calls[0][1].callback("1")
    assert len(connection.replies) == Session.max_pending_ops + 5 + 1


def test_failed_or_unavailable_auth_keeps_the_previous_login():
    session, connection, _ = make_session(ManualAuth())
    auth = session._authenticator
    send(session, {"op": "auth", "token": "good"})
    auth.calls[-1][1].callback("1001")
    send(session, {"op": "auth", "token": "bad"})
    auth.calls[-1][1].errback(AuthFailed())
    send(session, {"op": "auth", "token": "later"})
    auth.calls[-1][1].errback(AuthUnavailable())
    assert connection.replies[1:] == [
        {"code": 5, "msg": "Auth failed"},
        {"code": 6, "msg": "Auth unavailable"},
    ]
    assert session.uid == "1001"


def test_auth_back_end_timeout_answers_code_6_and_other_ops_continue():
    class Silent(Resource):
        isLeaf = True

        def render_POST(self, request):
            return NOT_DONE_YET

    clock = Clock()
    authenticator = HttpAuthenticator("http://auth/", StubTreq(Silent()), clock, timeout=3.0)
    session, connection, _ = make_session(authenticator, clock)
    send(session, {"op": "auth", "token": "t", "id": 1})
    send(session, {"op": "subscribe", "channel": "BTCUSDT@depth", "id": 2})
    clock.advance(2.9)
    assert connection.replies == []
    clock.advance(0.2)
    assert connection.replies == [
        {"code": 6, "msg": "Auth unavailable", "id": 1},
        {"result": True, "id": 2},
    ]


def test_closing_during_auth_leaves_nothing_behind():
    """Ops queued behind a slow auth do not run once the client has gone."""
    auth = ManualAuth()
    session, connection, node = make_session(auth)
    send(session, {"op": "subscribe", "channel": "BTCUSDT@depth"})
    send(session, {"op": "auth", "token": "t"})
    send(session, {"op": "subscribe", "channel": "@order"})
    send(session, {"op": "subscribe", "channel": "ETHUSDT@trades"})
    send(session, {"op": "auth", "token": "again"})
    session.end()
    auth.calls[0][1].callback("1001")
    assert connection.replies == [{"result": True}]
    assert len(auth.calls) == 1  # the queued auth never reached the back end
    assert node.hub.channel_count == 0
    assert node.mesh.subscribed_channels() == []


def test_subscription_limit_is_all_or_nothing():
    session, connection, node = make_session(max_subscriptions=3)
    send(session, {"op": "subscribe", "channels": ["A@depth", "B@depth"]})
    send(session, {"op": "subscribe", "channels": ["A@depth", "C@depth", "D@depth"], "id": 1})
    send(session, {"op": "subscribe", "channels": ["A@depth", "C@depth"], "id": 2})
    assert connection.replies == [
        {"result": True},
        {"code": 7, "msg": "Too many subscriptions", "id": 1},
        {"result": True, "id": 2},
    ]
    assert sorted(node.hub.channels()) == ["ex:A@depth", "ex:B@depth", "ex:C@depth"]


def test_prefix_option_names_internal_channels():
    session, connection, node = make_session(prefix="venue7/")
    send(session, {"op": "subscribe", "channel": "BTCUSDT@trades"})
    node.publish("venue7/BTCUSDT@trades", Publication(b"[]"))
    assert connection.pushes == [b"[]"]


def test_ping_answers_with_the_clock():
    clock = Clock()
    clock.advance(1732540000.123)
    session, connection, _ = make_session(clock=clock)
    send(session, {"op": "ping"})
    assert connection.replies == [{"op": "pong", "ts": 1732540000123}]


def test_an_unexpected_error_closes_with_1011_not_silence():
    @implementer(IAuthenticator)
    class Broken:
        def authenticate(self, token):
            return fail(RuntimeError("bug"))

    session, connection, _ = make_session(Broken())
    send(session, {"op": "auth", "token": "t"})
    assert connection.closed_with == 1011


def test_op_rate_is_a_token_bucket():
    clock = Clock()
    session, connection, _ = make_session(clock=clock, op_rate=10, op_burst=20)
    for index in range(25):
        send(session, {"op": "ping", "id": index})
    codes = [reply.get("code") for reply in connection.replies]
    assert codes.count(None) == 20 and codes.count(8) == 5
    assert [r["id"] for r in connection.replies if r.get("code") == 8] == [20, 21, 22, 23, 24]
    clock.advance(0.5)  # five tokens back
    for index in range(6):
        send(session, {"op": "ping", "id": index})
    assert [reply.get("code") for reply in connection.replies[25:]] == [None] * 5 + [8]
    assert connection.closed_with is None


def test_a_client_that_keeps_flooding_is_closed_with_1008():
    session, connection, _ = make_session(op_rate=10, op_burst=20)
    for index in range(20 + 40):
        send(session, {"op": "ping", "id": index})
    assert connection.closed_with is None  # 40 refused in a row: still answered
    send(session, {"op": "ping"})
    assert connection.closed_with == 1008


def test_login_expiry_ends_private_subscriptions_with_a_notice():
    clock = Clock()
    auth = ManualAuth()
    session, connection, node = make_session(auth, clock)
    send(session, {"op": "auth", "token": "t"})
    auth.calls[-1][1].callback(Identity("1001", expires=60.0))
    send(session, {"op": "subscribe", "channels": ["@order", "BTCUSDT@depth"]})
    clock.advance(59)
    assert session.uid == "1001"
    clock.advance(1)
    assert connection.replies[-1] == {
        "event": "notice",
        "data": {"type": "auth_expired", "channels": ["@order"]},
    }
    assert session.uid is None and list(session.subscriptions) == ["BTCUSDT@depth"]
    assert not node.hub.has_subscribers("ex:1001@order")


def test_reauth_in_band_moves_the_expiry():
    clock = Clock()
    auth = ManualAuth()
    session, connection, _ = make_session(auth, clock)
    send(session, {"op": "auth", "token": "t"})
    auth.calls[-1][1].callback(Identity("1001", expires=60.0))
    clock.advance(50)
    send(session, {"op": "auth", "token": "fresh"})
    auth.calls[-1][1].callback(Identity("1001", expires=200.0))
    clock.advance(100)
    assert session.uid == "1001"
    clock.advance(50)
    assert session.uid is None
    assert connection.replies[-1]["data"]["type"] == "auth_expired"
