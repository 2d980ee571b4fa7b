"""A kick that arrives while that user's auth is in flight is not lost (issue 12): the login
began before the kick, so it does not take, and the kicked user's events never reach it."""

from exchange_stream.testing import in_memory_gateway


def test_a_kick_during_an_auth_in_flight_stops_that_login():
    memory = in_memory_gateway(tokens={"t1": "1001", "t2": "1002"})
    memory.auth.hold = True
    kicked, other = memory.connect(), memory.connect()
    kicked.send({"op": "auth", "token": "t1", "id": 1})
    other.send({"op": "auth", "token": "t2", "id": 2})
    memory.gateway.sessions.kick("1001")  # as POST /v1/mesh/kick does, on every node
    memory.auth.answer_all()
    assert kicked.received() == [{"code": 5, "msg": "Auth failed", "id": 1}]
    assert other.received() == [{"result": True, "id": 2}]  # another uid: unaffected
    kicked.send({"op": "subscribe", "channel": "@balance", "id": 3})
    assert kicked.received() == [{"code": 1, "msg": "Not Auth", "id": 3}]
    # A login that starts after the kick takes, as the back end says.
    kicked.send({"op": "auth", "token": "t1", "id": 4})
    memory.auth.answer_all()
    assert kicked.received() == [{"result": True, "id": 4}]


def test_a_kick_still_logs_out_a_logged_in_session():
    memory = in_memory_gateway(tokens={"t1": "1001"})
    client = memory.connect()
    client.send({"op": "auth", "token": "t1"})
    client.send({"op": "subscribe", "channel": "@order"})
    assert client.received() == [{"result": True}, {"result": True}]
    memory.gateway.sessions.kick("1001")
    assert client.received() == [
        {"event": "notice", "data": {"type": "kicked", "channels": ["@order"]}}
    ]
