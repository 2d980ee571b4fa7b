"""Stream positions on the Redis mesh: offsets, recovery across nodes, idempotency keys."""

import json

import pytest_twisted

from exchange_stream.core.config import GatewayConfig
from tests.support import start_gateway, until


async def node(redis_server, auth_backend, **config):
    started = await start_gateway(
        GatewayConfig(mesh=redis_server.url, auth_url=auth_backend.url, auth_timeout=2.0, **config)
    )
    mesh = started.gateway.mesh
    await until(lambda: mesh.available and mesh.receiving)
    return started


async def logged_in(node, token="token-1001"):
    client = await node.connect()
    assert await client.request({"op": "auth", "token": token}) == {"result": True}
    return client


def order(n):
    return json.dumps({"event": "@order", "data": {"orderId": n}})


@pytest_twisted.ensureDeferred
async def test_a_client_resumes_on_another_node_without_gap_or_duplicate(
    redis_server, auth_backend
):
    a = await node(redis_server, auth_backend)
    b = await node(redis_server, auth_backend)
    try:
        client = await logged_in(b)
        answer = await client.request({"op": "subscribe", "channel": "@order", "recover": True})
        position = answer["streams"]["@order"]
        assert position["offset"] == 0
        status, published = await a.publish("ex:1001@order", order(1))
        assert status == 200 and published["r"]["offset"] == 1
        assert published["r"]["epoch"] == position["epoch"] and published["r"]["s"] == 1
        assert (await client.next())["offset"] == 1
        await client.close()
        for n in range(2, 6):
            await a.publish("ex:1001@order", order(n))
        again = await logged_in(a)
        since = {"@order": {"epoch": position["epoch"], "offset": 1}}
        answer = await again.request({"op": "subscribe", "channel": "@order", "since": since})
        assert answer["streams"]["@order"] == {
            "epoch": position["epoch"],
            "offset": 5,
            "recovered": True,
        }
        await b.publish("ex:1001@order", order(6))
        pushes = [await again.next() for _ in range(5)]
        assert [p["offset"] for p in pushes] == [2, 3, 4, 5, 6]
        assert [p["data"]["orderId"] for p in pushes] == [2, 3, 4, 5, 6]
        await b.publish("ex:1001@order", order(7))
        assert (await again.next())["offset"] == 7  # nothing in between: no duplicate
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_an_idempotency_key_publishes_once_and_answers_the_same(redis_server, auth_backend):
    a = await node(redis_server, auth_backend)
    try:
        client = await logged_in(a)
        await client.request({"op": "subscribe", "channel": "@order"})
        body = {"c": "ex:1001@order", "d": order(1), "k": "fill-17"}
        first = await a.publish(**{"channel": body["c"], "data": body["d"], "k": "fill-17"})
        second = await a.publish(**{"channel": body["c"], "data": body["d"], "k": "fill-17"})
        assert first == second and first[1]["r"]["offset"] == 1
        assert json.loads(order(1)) == await client.next()
        await a.publish("ex:1001@order", order(2))
        assert json.loads(order(2)) == await client.next()  # the retry was not sent again
    finally:
        await a.stop()


def resume_with_a_stock_client(url: str, since: dict) -> tuple[dict, list[dict]]:
    """The ``websockets`` library (not Autobahn) resumes: its answer and what follows it."""
    from websockets.sync.client import connect

    with connect(url) as ws:
        ws.send(json.dumps({"op": "auth", "token": "token-1001"}))
        assert json.loads(ws.recv(5)) == {"result": True}
        ws.send(json.dumps({"op": "subscribe", "channel": "@order", "since": since}))
        answer = json.loads(ws.recv(5))
        pushes = []
        for _ in range(answer["streams"]["@order"]["offset"] - since["@order"]["offset"]):
            pushes.append(json.loads(ws.recv(5)))
        return answer, pushes


@pytest_twisted.ensureDeferred
async def test_an_independent_client_resumes_across_nodes_and_a_redis_restart_says_lost(
    redis_server, auth_backend
):
    from twisted.internet import threads

    a = await node(redis_server, auth_backend)
    b = await node(redis_server, auth_backend)
    try:
        for n in range(1, 4):
            _, published = await a.publish("ex:1001@order", order(n))
        epoch = published["r"]["epoch"]
        since = {"@order": {"epoch": epoch, "offset": 1}}
        answer, pushes = await threads.deferToThread(resume_with_a_stock_client, b.url, since)
        assert answer["streams"]["@order"] == {"epoch": epoch, "offset": 3, "recovered": True}
        assert [p["offset"] for p in pushes] == [2, 3]
        mesh = b.gateway.mesh
        redis_server.stop()  # the history goes with it: a new epoch
        redis_server.start()
        # both of node B's connections came back (not: it has not noticed the loss yet)
        await until(lambda: mesh.reconnects >= 2 and mesh.available and mesh.receiving)
        since = {"@order": {"epoch": epoch, "offset": 3}}
        answer, pushes = await threads.deferToThread(resume_with_a_stock_client, b.url, since)
        position = answer["streams"]["@order"]
        assert position["recovered"] is False and position["epoch"] != epoch
        assert pushes == []  # nothing replayed: the client re-fetches its state
    finally:
        await a.stop()
        await b.stop()
