"""``exchange_stream.testing``: the real gateway in memory, driven by hand.

These tests pin the doubles' own promises (what an embedding application may rely on), and
use them for the timing behaviour that needs no socket: drain, heartbeats, ordering behind a
slow auth, mesh outages."""

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.mesh_api import parse_publish
from exchange_stream.testing import in_memory_gateway


def test_pushes_reach_subscribers_and_private_channels_stay_private():
    memory = in_memory_gateway(tokens={"t1": "1001", "t2": "1002"})
    alice, bob = memory.connect(), memory.connect()
    for client, token in ((alice, "t1"), (bob, "t2")):
        client.send({"op": "auth", "token": token})
        client.send({"op": "subscribe", "channels": ["@balance", "BTCUSDT@trades"]})
    memory.publish("ex:1001@balance", {"event": "@balance", "data": {"uid": 1001}})
    memory.publish("ex:BTCUSDT@trades", {"event": "BTCUSDT@trades", "data": []})
    ok = [{"result": True}, {"result": True}]
    trades = {"event": "BTCUSDT@trades", "data": []}
    assert alice.received() == [*ok, {"event": "@balance", "data": {"uid": 1001}}, trades]
    assert bob.received() == [*ok, trades]


def test_an_op_waits_for_a_slow_auth_before_it_and_a_back_end_outage_is_code_6():
    memory = in_memory_gateway(tokens={"t": "1001"})
    memory.auth.hold = True
    client = memory.connect()
    client.send({"op": "auth", "token": "t", "id": 1})
    client.send({"op": "subscribe", "channel": "@order", "id": 2})
    assert client.received() == []  # the subscribe waits behind the auth
    memory.auth.answer_all()
    assert client.received() == [{"result": True, "id": 1}, {"result": True, "id": 2}]
    memory.auth.hold, memory.auth.unavailable = False, True
    client.send({"op": "auth", "token": "t", "id": 3})
    assert client.received() == [{"code": 6, "msg": "Auth unavailable", "id": 3}]


def test_a_mesh_outage_refuses_publishes_with_503_and_nothing_sent():
    memory = in_memory_gateway()
    memory.mesh.available = False
    request = parse_publish({"c": "ex:BTCUSDT@trades", "d": "{}"})
    answers = []
    memory.gateway.publisher.publish_all([request], False).addCallback(answers.append)
    assert answers == [(503, {"E": {"c": 104, "m": "mesh unavailable, nothing was sent"}})]
    assert memory.mesh.published == []


def test_drain_tells_every_client_to_reconnect_within_the_window():
    memory = in_memory_gateway(GatewayConfig(drain_seconds=3))
    clients = [memory.connect() for _ in range(20)]
    drained = memory.gateway.drain()
    assert memory.gateway.draining
    memory.clock.advance(1.5)
    told = [client for client in clients if client.connection.closed_with is not None]
    assert 0 < len(told) < 20  # spread over the window, not all at once
    memory.clock.advance(1.5)
    for client in clients:
        (notice,) = client.received()
        assert notice["event"] == "notice" and notice["data"]["type"] == "reconnect"
        assert 0 <= notice["data"]["reconnectInMs"] <= 1000
        assert client.connection.closed_with[0] == 4200
        client.leave()
    assert drained.called


def test_heartbeat_pings_the_living_and_drops_the_silent():
    memory = in_memory_gateway(GatewayConfig(ping_interval=20, ping_timeout=10))
    talking, silent = memory.connect(), memory.connect()
    memory.clock.advance(20)
    assert talking.connection.pings == silent.connection.pings == 1
    talking.connection.last_heard = memory.clock.seconds()
    memory.clock.advance(20)  # silent has said nothing for 40 s > 20 + 10
    assert silent.connection.dropped and not talking.connection.dropped
    assert talking.connection.pings == 2
