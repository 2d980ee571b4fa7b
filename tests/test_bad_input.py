"""Bad input from clients and from the auth back end, on real sockets, and property tests
that no client string reaches another user's private channel."""

import json

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from exchange_stream.core.channels import PRIVATE_TYPES, InvalidChannel, parse_channel
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.wire import ERROR_MESSAGES, OpError, parse_request
from tests.support import free_port, start_gateway


@pytest_twisted.ensureDeferred
async def test_dead_auth_back_end_is_code_6_and_public_data_flows():
    running = await start_gateway(
        GatewayConfig(auth_url=f"http://127.0.0.1:{free_port()}/auth", auth_timeout=2.0)
    )
    try:
        client = await running.connect()
        assert await client.request({"op": "auth", "token": "t", "id": 1}) == {
            "code": 6,
            "msg": "Auth unavailable",
            "id": 1,
        }
        await client.request({"op": "subscribe", "channel": "BTCUSDT@ticker"})
        await running.publish("ex:BTCUSDT@ticker", '{"last":"64000.1"}')
        assert await client.next() == {"last": "64000.1"}
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_slow_auth_back_end_times_out_without_blocking_others(auth_backend):
    """Over HTTP: the request to a back end that does not answer in time is given up on (the
    timings are in test_timeouts.py, on a fake clock)."""
    auth_backend.delay = 1.0
    running = await start_gateway(GatewayConfig(auth_url=auth_backend.url, auth_timeout=0.1))
    try:
        waiting, other = await running.connect(), await running.connect()
        waiting.send({"op": "auth", "token": "token-1001"})
        assert await other.request({"op": "ping", "id": 1}) is not None
        assert await waiting.next() == {"code": 6, "msg": "Auth unavailable"}
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_lying_auth_back_end_cannot_inject_a_channel(running, auth_backend):
    auth_backend.user("evil", "1002@balance")
    auth_backend.user("bool", True)
    auth_backend.answers["html"] = (200, b"<html>hello</html>")
    client = await running.connect()
    for token in ("evil", "bool", "html"):
        assert await client.request({"op": "auth", "token": token}) == {
            "code": 5,
            "msg": "Auth failed",
        }
    assert (await client.request({"op": "subscribe", "channel": "@balance"}))["code"] == 1


@pytest_twisted.ensureDeferred
async def test_tokens_are_sent_as_json_not_concatenated(running, auth_backend):
    client = await running.connect()
    await client.request({"op": "auth", "token": 'a"}, {"token": "token-1001'})
    assert json.loads(auth_backend.requests[-1]) == {"token": 'a"}, {"token": "token-1001'}


@given(st.text(max_size=80))
def test_no_client_string_names_someone_elses_private_channel(name):
    """Whatever a client sends as a channel, the internal name is either public or the
    session's own uid's private channel."""
    try:
        channel = parse_channel(name)
    except InvalidChannel:
        return
    internal = channel.internal("ex:", "1001")
    kind = internal.rsplit("@", 1)[1]
    if kind in PRIVATE_TYPES:
        assert internal == f"ex:1001@{kind}"
    else:
        assert internal == f"ex:{name}"
        assert internal.count("@") == 1


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_op_like = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "list", "x"])
        | _json_values,
        "id": _json_values,
        "channel": st.sampled_from(["@balance", "BTCUSDT@depth", "x@y"]) | _json_values,
        "channels": st.lists(st.sampled_from(["@order", "A@kline_1m", "bad"]), max_size=3)
        | _json_values,
        "token": _json_values,
    },
)


@given(st.one_of(_json_values, _op_like).map(json.dumps) | st.binary(max_size=64))
def test_every_frame_parses_or_gets_a_documented_error(frame):
    try:
        parse_request(frame)
    except OpError as error:
        assert error.code in ERROR_MESSAGES
