"""CONNMIX's persistent publish API over a WebSocket on the internal API port."""

import pytest_twisted

from exchange_stream.core.config import GatewayConfig
from tests.support import connect, handshake, start_gateway


@pytest_twisted.ensureDeferred
async def test_publish_and_kick_over_the_websocket_api(running):
    subscriber = await running.connect()
    await subscriber.request({"op": "auth", "token": "token-1001"})
    await subscriber.request({"op": "subscribe", "channels": ["@balance", "BTCUSDT@depth"]})
    api = await connect(running.api_port, "/ws/v1")
    message = {"m": "mesh.publish", "p": {"c": "ex:1001@balance", "d": '{"b":"1.5"}'}, "i": 7}
    answer = await api.request(message)
    assert answer["r"]["s"] == 1 and answer["r"]["offset"] == 1 and answer["i"] == 7
    assert await subscriber.next() == {"b": "1.5"}
    for index in range(100):  # answers come back in order, one per request
        api.send({"m": "mesh.publish", "p": {"c": "ex:BTCUSDT@depth", "d": str(index)}, "i": index})
    assert [(await api.next())["i"] for _ in range(100)] == list(range(100))
    assert [await subscriber.next() for _ in range(100)] == list(range(100))
    answer = await api.request({"m": "mesh.kick", "p": {"uid": 1001}, "i": "k"})
    assert answer == {"E": None, "r": {"s": 1, "f": 0}, "i": "k"}
    assert (await subscriber.next())["data"]["type"] == "kicked"


@pytest_twisted.ensureDeferred
async def test_bad_requests_get_an_error_with_their_id(running):
    api = await connect(running.api_port, "/ws/v1")
    for message, request_id in [
        (b"nope", None),
        ({"m": "mesh.send", "i": 1}, 1),
        ({"m": "mesh.publish", "p": {"c": "ex:x"}, "i": "a"}, "a"),
        ({"m": "mesh.publish", "p": {"c": "es:control", "d": "{}"}, "i": 2}, 2),
    ]:
        answer = await api.request(message)
        assert answer["E"]["c"] == 101 and answer["i"] == request_id, message


@pytest_twisted.ensureDeferred
async def test_the_api_token_guards_the_websocket_api(auth_backend):
    running = await start_gateway(GatewayConfig(auth_url=auth_backend.url, api_token="s3cret"))
    try:
        refused = await handshake(running.api_port, path="/ws/v1")
        assert refused == (None, 401)
        client, _ = await handshake(
            running.api_port, path="/ws/v1", headers={"Authorization": "Bearer s3cret"}
        )
        message = {"m": "mesh.publish", "p": {"c": "ex:x", "d": "1"}, "i": 1}
        assert (await client.request(message))["E"] is None
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_a_batch_over_the_websocket_api_is_answered_like_the_http_batch(running):
    subscriber = await running.connect()
    await subscriber.request({"op": "subscribe", "channels": ["BTCUSDT@ticker", "ETHUSDT@ticker"]})
    api = await connect(running.api_port, "/ws/v1")
    batch = [
        {"c": "ex:BTCUSDT@ticker", "d": "1"},
        {"c": "ex:ETHUSDT@ticker", "d": "2"},
        {"c": "ex:SOLUSDT@ticker", "d": "3"},
    ]
    answer = await api.request({"m": "mesh.publish", "p": batch, "i": 3})
    assert answer == {
        "E": None,
        "r": [{"s": 1, "f": 0}, {"s": 1, "f": 0}, {"s": 0, "f": 0}],
        "i": 3,
    }
    assert [await subscriber.next(), await subscriber.next()] == [1, 2]
    refused = await api.request({"m": "mesh.publish", "p": [batch[0], {"c": "ex:x"}], "i": 4})
    assert refused == {"E": {"c": 101, "m": 'publish 1: "d" must be a string'}, "i": 4}
    empty = await api.request({"m": "mesh.publish", "p": [], "i": 5})
    assert empty["E"]["c"] == 101 and empty["i"] == 5
    kick = await api.request({"m": "mesh.kick", "p": [{"uid": 1001}], "i": 6})  # no kick batches
    assert kick["E"]["c"] == 101 and kick["i"] == 6
    api.send({"m": "mesh.publish", "p": {"c": "ex:BTCUSDT@ticker", "d": "4"}, "i": 7})
    assert await subscriber.next() == 4  # the refused batch sent nothing
