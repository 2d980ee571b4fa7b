"""Property test of whole frames against a live, installed gateway: whatever a client sends,
the answer is one of the documented replies (or a documented close), and nothing reaches the
gateway's log as an unhandled error."""

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from exchange_stream.core.wire import ERROR_MESSAGES

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
_channels = st.sampled_from(
    ["@balance", "@order", "BTCUSDT@depth", "ETH-USDT@kline_4h", "x@y", "1001@balance", ""]
)
_ops = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "list"]) | _values,
        "id": st.integers() | st.text(max_size=10) | _values,
        "channel": _channels | _values,
        "channels": st.lists(_channels, max_size=5) | _values,
        "token": st.sampled_from(["***", "nope", ""]) | _values,
    },
)
frames = st.one_of(
    _ops.map(json.dumps),
    _values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=100),
)


def documented(reply: dict) -> bool:
    if "code" in reply:
        extra = set(reply) - {"code", "msg", "id", "channel"}
        return ERROR_MESSAGES.get(reply["code"]) == reply["msg"] and not extra
    if "result" in reply:
        return reply["result"] is True or isinstance(reply["result"], list)
    return reply.get("op") == "pong" and isinstance(reply.get("ts"), int)


class Connection:
    """One client connection, opened again after the gateway closed it."""

    def __init__(self, url, stack: contextlib.ExitStack):
        self.url = url
        self.stack = stack
        self.ws = None

    def get(self):
        if self.ws is None:
            self.ws = self.stack.enter_context(connect(self.url, max_size=None))
        return self.ws

    def lost(self):
        self.ws = None


@pytest.fixture(scope="module")
def twistd_args():
    """The parser is what is fuzzed here, not the rate limit."""
    return ["--op-rate", "1000000", "--op-burst", "1000000"]


@pytest.fixture
def connection(twistd_gateway):
    url, _, log = twistd_gateway
    with contextlib.ExitStack() as stack:
        yield Connection(url, stack)
    text = log.read_text()
    assert "Unhandled" not in text and "Traceback" not in text, text[-3000:]


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=frames)
def test_every_frame_gets_a_documented_answer(connection, frame):
    ws = connection.get()
    ws.send(frame)
    try:
        reply = json.loads(ws.recv(5))
    except ConnectionClosed as closed:
        connection.lost()
        assert isinstance(frame, bytes) and closed.rcvd.code == 1003  # binary: documented
        return
    assert not isinstance(frame, bytes)
    assert documented(reply), (frame, reply)
