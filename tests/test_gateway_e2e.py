"""End to end on real sockets: Autobahn clients, the real auth back end and publish API."""

import json

import pytest_twisted

from tests.support import connect, start_gateway

BALANCE = json.dumps({"event": "@balance", "data": {"uid": 1001, "balance": [{"BTC": "1.5"}]}})


@pytest_twisted.ensureDeferred
async def test_seed_walkthrough(running):
    """The seed's test section: auth, subscribe @balance, publish, receive byte for byte."""
    client = await running.connect()
    assert await client.request({"op": "auth", "token": "token-1001"}) == {"result": True}
    assert await client.request({"op": "subscribe", "channel": "@balance"}) == {"result": True}
    status, answer = await running.publish("ex:1001@balance", BALANCE)
    assert (status, answer["E"], answer["r"]["s"], answer["r"]["f"]) == (200, None, 1, 0)
    assert answer["r"]["offset"] == 1  # @balance keeps a history: its position
    payload, binary = await client.next_raw()
    assert (payload, binary) == (BALANCE.encode(), False)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_public_channel_reaches_only_its_subscribers(running):
    """A publication goes to each subscriber of its channel once and to nobody else."""
    depth = [await running.connect() for _ in range(3)]
    other = await running.connect()
    for client in depth:
        assert await client.request({"op": "subscribe", "channel": "BTCUSDT@depth"}) == {
            "result": True
        }
    assert await other.request({"op": "subscribe", "channel": "ETHUSDT@depth"}) == {"result": True}
    _, answer = await running.publish("ex:BTCUSDT@depth", '{"event":"BTCUSDT@depth"}')
    assert answer["r"]["s"] == 1
    await running.publish("ex:ETHUSDT@depth", '"eth"')
    await running.publish("ex:BTCUSDT@depth", '"end"')
    for client in depth:  # once, and nothing of ETHUSDT in between
        assert [await client.next(), await client.next()] == [{"event": "BTCUSDT@depth"}, "end"]
    assert await other.next() == "eth"  # nothing of BTCUSDT before it


@pytest_twisted.ensureDeferred
async def test_private_channels_stay_private(running):
    """Two users on @balance each receive only their own; strings cannot name another uid."""
    alice, bob = await running.connect(), await running.connect()
    await alice.request({"op": "auth", "token": "token-1001"})
    await bob.request({"op": "auth", "token": "token-1002"})
    for client in (alice, bob):
        assert await client.request({"op": "subscribe", "channel": "@balance"}) == {"result": True}
    for attempt in ("1001@balance", "ex:1001@balance", "@balance@1001", "1001", "@1001@balance"):
        reply = await bob.request({"op": "subscribe", "channel": attempt})
        assert reply["code"] == 4, attempt
    await running.publish("ex:1001@balance", '{"for":"alice"}')
    await running.publish("ex:1002@balance", '{"for":"bob"}')
    assert await alice.next() == {"for": "alice"}
    assert await bob.next() == {"for": "bob"}  # nothing of alice's before it


@pytest_twisted.ensureDeferred
async def test_private_channel_needs_auth(running):
    client = await running.connect()
    assert await client.request({"op": "subscribe", "channel": "@order", "id": 1}) == {
        "code": 1,
        "msg": "Not Auth",
        "id": 1,
    }
    reply = await client.request({"op": "auth", "token": "wrong"})
    assert reply == {"code": 5, "msg": "Auth failed"}
    assert (await client.request({"op": "subscribe", "channel": "@order"}))["code"] == 1


@pytest_twisted.ensureDeferred
async def test_reauth_as_another_user_drops_old_private_subscriptions(running):
    client = await running.connect()
    await client.request({"op": "auth", "token": "token-1001"})
    await client.request({"op": "subscribe", "channels": ["@balance", "BTCUSDT@trades"]})
    assert await client.request({"op": "auth", "token": "token-1002"}) == {"result": True}
    assert await client.request({"op": "list"}) == {"result": ["BTCUSDT@trades"]}
    _, answer = await running.publish("ex:1001@balance", '{"old":"user"}')
    assert answer["r"]["s"] == 0
    # the next frame is this answer: nothing of the old user's came before it
    assert await client.request({"op": "subscribe", "channel": "@balance"}) == {"result": True}
    await running.publish("ex:1002@balance", '{"new":"user"}')
    assert await client.next() == {"new": "user"}


@pytest_twisted.ensureDeferred
async def test_errors_keep_the_connection_open(running):
    """Each bad op gets its documented answer, and the next good op still works."""
    client = await running.connect()
    cases = [
        (b"not json", {"code": 2, "msg": "Invalid JSON"}),
        (b"[1,2]", {"code": 2, "msg": "Invalid JSON"}),
        (b'{"op":"fly","id":"x"}', {"code": 3, "msg": "Unknown op", "id": "x"}),
        (b'{"channel":"BTCUSDT@depth"}', {"code": 3, "msg": "Unknown op"}),
        (b'{"op":"subscribe","channel":7}', {"code": 2, "msg": "Invalid JSON"}),
        (
            b'{"op":"subscribe","channel":"BTCUSDT@nope"}',
            {"code": 4, "msg": "Invalid channel", "channel": "BTCUSDT@nope"},
        ),
        (b'{"op":"auth","token":["x"]}', {"code": 2, "msg": "Invalid JSON"}),
        (b'{"op":"ping","id":true}', {"code": 2, "msg": "Invalid JSON"}),
    ]
    for frame, expected in cases:
        client.send(frame)
        assert await client.next() == expected, frame
    assert await client.request({"op": "subscribe", "channel": "BTCUSDT@kline_5m"}) == {
        "result": True
    }


@pytest_twisted.ensureDeferred
async def test_batch_subscribe_is_all_or_nothing(running):
    client = await running.connect()
    reply = await client.request(
        {"op": "subscribe", "channels": ["BTCUSDT@depth", "BTCUSDT@bogus"], "id": 9}
    )
    assert reply == {"code": 4, "msg": "Invalid channel", "channel": "BTCUSDT@bogus", "id": 9}
    assert await client.request({"op": "list"}) == {"result": []}
    reply = await client.request({"op": "subscribe", "channels": ["@balance", "BTCUSDT@depth"]})
    assert reply["code"] == 1
    assert await client.request({"op": "list"}) == {"result": []}
    ok = await client.request({"op": "subscribe", "channels": ["A@depth", "B@ticker"], "id": 2})
    assert ok == {"result": True, "id": 2}
    assert await client.request({"op": "list"}) == {"result": ["A@depth", "B@ticker"]}
    await client.request({"op": "unsubscribe", "channels": ["A@depth"]})
    assert await client.request({"op": "list"}) == {"result": ["B@ticker"]}


@pytest_twisted.ensureDeferred
async def test_ping_op(running):
    client = await running.connect()
    reply = await client.request({"op": "ping", "id": 5})
    assert reply["op"] == "pong" and reply["id"] == 5 and isinstance(reply["ts"], int)


@pytest_twisted.ensureDeferred
async def test_binary_frame_closes_with_1003(running):
    client = await running.connect()
    client.protocol.sendMessage(b"\x00\x01", isBinary=True)
    code, _ = await client.closed
    assert code == 1003


@pytest_twisted.ensureDeferred
async def test_oversize_frame_closes_with_1009_and_others_carry_on(running):
    big = await running.connect()
    bystander = await running.connect()
    await bystander.request({"op": "subscribe", "channel": "BTCUSDT@trades"})
    limit = running.gateway.config.max_message_size
    big.send(b'{"op":"ping","pad":"' + b"x" * limit + b'"}')
    code, _ = await big.closed
    assert code == 1009
    await running.publish("ex:BTCUSDT@trades", "{}")
    assert await bystander.next() == {}


@pytest_twisted.ensureDeferred
async def test_binary_publish_goes_out_as_binary_frame(running):
    client = await running.connect()
    await client.request({"op": "subscribe", "channel": "BTCUSDT@depth"})
    status, _ = await running.publish("ex:BTCUSDT@depth", "AAEC/w==", t="binary")
    assert status == 200
    assert await client.next_raw() == (b"\x00\x01\x02\xff", True)


@pytest_twisted.ensureDeferred
async def test_connections_over_tcp_leave_nothing_behind(running):
    """Open and close 100 subscribed connections over TCP: the hub and mesh index end empty
    (1,000 through the same protocol in memory: test_node.py)."""
    clients = []
    for index in range(100):
        client = await connect(running.ws_port)
        client.send({"op": "subscribe", "channels": ["BTCUSDT@depth", f"S{index % 7}@ticker"]})
        clients.append(client)
    for client in clients:
        assert await client.next() == {"result": True}
    hub = running.gateway.hub
    assert hub.subscriber_count == 100 and hub.channel_count == 8
    _, answer = await running.publish("ex:BTCUSDT@depth", "{}")
    assert answer["r"]["s"] == 1
    for client in clients:
        await client.close()
    assert hub.subscriber_count == 0
    assert hub.channel_count == 0
    assert hub.subscription_count == 0
    assert running.gateway.mesh.subscribed_channels() == ["es:control"]  # always listened to
    assert len(running.gateway.sessions) == 0


@pytest_twisted.ensureDeferred
async def test_late_subscriber_gets_the_snapshot_after_the_answer_and_before_live(running):
    await running.publish("ex:BTCUSDT@ticker", '{"last":"64000.1"}', retain=True)
    client = await running.connect()
    client.send({"op": "subscribe", "channels": ["BTCUSDT@ticker", "BTCUSDT@trades"], "id": 1})
    assert await client.next() == {"result": True, "id": 1}
    assert await client.next() == {"last": "64000.1"}
    await running.publish("ex:BTCUSDT@ticker", '{"last":"64000.2"}', retain=True)
    await running.publish("ex:BTCUSDT@trades", '{"end":true}')
    assert await client.next() == {"last": "64000.2"}
    assert await client.next() == {"end": True}  # the snapshot was not sent again


@pytest_twisted.ensureDeferred
async def test_stopping_the_gateway_tells_clients_to_reconnect(gateway_config):
    running = await start_gateway(gateway_config)
    clients = [await running.connect() for _ in range(3)]
    await running.stop()
    for client in clients:
        notice = await client.next()
        assert notice["event"] == "notice" and notice["data"]["type"] == "reconnect"
        assert 0 <= notice["data"]["reconnectInMs"] <= 1000
        code, reason = await client.closed
        assert code == 4200 and "reconnect in" in reason
