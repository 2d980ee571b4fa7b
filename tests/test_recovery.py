"""Stream positions and client recovery on the in-memory gateway (docs/protocol.md,
"Recovery"): positions on request, resume without gap or duplicate, honest "recovered"."""

import json

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.mesh_api import parse_publish
from exchange_stream.testing import in_memory_gateway

ORDER = "ex:1001@order"


def order(n):
    return {"event": "@order", "data": {"orderId": n}}


def logged_in(memory, token="t1"):
    client = memory.connect()
    client.send({"op": "auth", "token": token})
    assert client.received() == [{"result": True}]
    return client


def gateway(**config):
    return in_memory_gateway(GatewayConfig(**config), tokens={"t1": "1001", "t2": "1002"})


def test_positions_on_request_and_pushes_that_carry_their_offset():
    memory = gateway()
    plain, positioned = logged_in(memory), logged_in(memory)
    plain.send({"op": "subscribe", "channel": "@order"})
    positioned.send({"op": "subscribe", "channel": "@order", "recover": True, "id": 1})
    (answer,) = positioned.received()
    epoch = answer["streams"]["@order"]["epoch"]
    assert answer == {"result": True, "streams": {"@order": {"epoch": epoch, "offset": 0}}, "id": 1}
    memory.publish(ORDER, order(1))
    assert positioned.received() == [{**order(1), "offset": 1}]
    assert plain.received() == [{"result": True}, order(1)]  # the seed's shape, unchanged


def test_a_resume_gets_exactly_what_it_missed_then_live_ones():
    memory = gateway()
    for n in range(1, 4):
        memory.publish(ORDER, order(n))
    first = logged_in(memory)
    first.send({"op": "subscribe", "channel": "@order", "recover": True})
    (answer,) = first.received()
    position = answer["streams"]["@order"]
    assert position["offset"] == 3
    memory.publish(ORDER, order(4))
    (pushed,) = first.received()
    first.leave()
    for n in range(5, 8):
        memory.publish(ORDER, order(n))
    again = logged_in(memory)
    since = {"@order": {"epoch": position["epoch"], "offset": pushed["offset"]}}
    again.send({"op": "subscribe", "channel": "@order", "since": since})
    memory.publish(ORDER, order(8))
    answer, *pushes = again.received()
    assert answer["streams"]["@order"] == {
        "epoch": position["epoch"],
        "offset": 7,
        "recovered": True,
    }
    assert [p["offset"] for p in pushes] == [5, 6, 7, 8]
    assert [p["data"]["orderId"] for p in pushes] == [5, 6, 7, 8]


def test_a_position_that_cannot_be_served_says_recovered_false_and_replays_nothing():
    memory = gateway(history_size=3)
    for n in range(1, 11):
        memory.publish(ORDER, order(n))
    client = logged_in(memory)
    client.send({"op": "subscribe", "channel": "@order", "recover": True})
    epoch = client.received()[0]["streams"]["@order"]["epoch"]
    client.leave()
    for since in ({"epoch": epoch, "offset": 2}, {"epoch": "another", "offset": 9}):
        resumed = logged_in(memory)
        resumed.send({"op": "subscribe", "channel": "@order", "since": {"@order": since}})
        assert resumed.received() == [
            {"result": True, "streams": {"@order": {"epoch": epoch, "offset": 10,
                                                    "recovered": False}}}
        ]  # fmt: skip
        resumed.leave()
    inside = logged_in(memory)  # still in the history (the last 3): served
    since = {"@order": {"epoch": epoch, "offset": 8}}
    inside.send({"op": "subscribe", "channel": "@order", "since": since})
    assert [p.get("offset") for p in inside.received()] == [None, 9, 10]


def test_a_resume_only_ever_reads_the_logged_in_users_own_stream():
    memory = gateway()
    memory.publish(ORDER, order(1))
    alice = logged_in(memory)
    alice.send({"op": "subscribe", "channel": "@order", "recover": True})
    epoch = alice.received()[0]["streams"]["@order"]["epoch"]
    mallory = logged_in(memory, "t2")
    mallory.send({"op": "subscribe", "channel": "@order",
                  "since": {"@order": {"epoch": epoch, "offset": 0}}})  # fmt: skip
    (answer,) = mallory.received()
    assert answer["streams"]["@order"]["recovered"] is False  # 1002's stream, not 1001's
    assert answer["streams"]["@order"]["epoch"] != epoch


def test_publishes_on_streams_answer_their_position_and_a_key_publishes_once():
    memory = gateway()
    client = logged_in(memory)
    client.send({"op": "subscribe", "channel": "@order"})
    publisher = memory.gateway.publisher
    answers = []
    request = parse_publish({"c": ORDER, "d": json.dumps(order(1)), "k": "fill-17"})
    for _ in range(2):  # a retry
        publisher.publish_all([request], False).addCallback(answers.append)
    (status, first), (_, second) = answers
    assert status == 200 and first == second
    assert first["r"]["offset"] == 1 and first["r"]["epoch"]
    assert client.received() == [{"result": True}, order(1)]  # once
    public = parse_publish({"c": "ex:BTCUSDT@depth", "d": "{}"})
    publisher.publish_all([public], False).addCallback(answers.append)
    assert answers[-1] == (200, {"E": None, "r": {"s": 0, "f": 0}})  # no position on state


def test_stream_publications_must_be_json_objects():
    for data in ("[1]", "not json", '"text"'):
        try:
            parse_publish({"c": ORDER, "d": data})
        except Exception as error:
            assert error.status == 400 and "JSON object" in error.message
        else:
            raise AssertionError(f"{data!r} was accepted on a stream channel")
    assert parse_publish({"c": "ex:BTCUSDT@depth", "d": "[1]"}).channel == "ex:BTCUSDT@depth"


def test_a_position_that_is_no_position_is_invalid_json_and_the_session_goes_on():
    memory = gateway()
    client = logged_in(memory)
    for since in (
        {"@order": {"epoch": "E", "offset": 2**64}},
        {"@order": {"epoch": "E", "offset": -1}},
        {"@order": {"epoch": 7, "offset": 1}},
        {"@order": [1]},
        ["@order"],
    ):
        client.send({"op": "subscribe", "channel": "@order", "since": since, "id": 1})
        assert client.received() == [{"code": 2, "msg": "Invalid JSON", "id": 1}]
    client.send({"op": "subscribe", "channel": "@order", "recover": "yes", "id": 2})
    assert client.received() == [{"code": 2, "msg": "Invalid JSON", "id": 2}]
    client.send({"op": "subscribe", "channel": "@order", "id": 3})
    assert client.received() == [{"result": True, "id": 3}]
