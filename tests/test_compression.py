"""permessage-deflate (``adapters/compression.py``): negotiated without context takeover
both ways, each publication compressed once for all of its subscribers, nothing kept per
connection, and frames that independent clients read.

The frames are checked here at the byte level with Python's own ``zlib`` (a fresh
decompressor per message, which is what no context takeover promises); the round trips
through other client libraries are in ``test_compression_clients.py``.
"""

import json
import os
import zlib

import pytest
from twisted.internet.task import Clock

from exchange_stream.adapters import compression
from exchange_stream.adapters.compression import SharedFrame, fitting_window
from exchange_stream.adapters.upstream import negotiated_compression
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.publication import Publication
from tests.support import MemoryClient, client_frame, memory_gateway

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"  # Chrome's
BOTH_WAYS = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
RSV1 = 0x40


def raw_frames(client: MemoryClient) -> list[tuple[int, bytes]]:
    """The frames written since the last read, as (first byte, payload): the first byte
    keeps RSV1, which says the frame is compressed."""
    client.pump()
    data = client.transport.value()[client._read :]
    client._read += len(data)
    frames = []
    while data:
        size, offset = data[1] & 0x7F, 2
        if size == 126:
            size, offset = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0], data[offset : offset + size]))
        data = data[offset + size :]
    return frames


def inflate(body: bytes, window: int = 15) -> bytes:
    """A compressed message body read on its own, as a client does without context."""
    return zlib.decompressobj(-window).decompress(body + b"\x00\x00\xff\xff")


def answer_extensions(client: MemoryClient) -> str | None:
    head = client.transport.value().partition(b"\r\n\r\n")[0].decode()
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "sec-websocket-extensions":
            return value.strip()
    return None


def compressed_client_frame(payload: bytes) -> bytes:
    """A client frame compressed on its own (no context), RSV1 set."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = client_frame(body)
    return bytes((frame[0] | RSV1,)) + frame[1:]


def depth(n: int = 20) -> str:
    levels = [[f"4321{i}.15", f"{i}.2345"] for i in range(n)]
    return json.dumps({"s": "BTCUSDT", "u": 7, "b": levels, "a": levels})


def subscribed(gateway, channel: str = "BTCUSDT@depth", *headers: str) -> MemoryClient:
    client = MemoryClient(gateway, 5555, *headers)
    assert client.request({"op": "subscribe", "channel": channel}) == [{"result": True}]
    return client


def publish(gateway, channel: str, data: str) -> None:
    """What the publisher would deliver for ``data`` on ``channel`` (an internal name)."""
    event = channel.removeprefix("ex:")
    push = json.dumps({"event": event, "data": json.loads(data)}).encode()
    gateway.node.publish(channel, Publication(push))
    gateway.reactor.advance(0)


@pytest.fixture
def gateway():
    return memory_gateway(Clock())


def test_an_offer_is_answered_without_context_takeover_both_ways(gateway):
    client = MemoryClient(gateway, 5555, OFFER)
    assert client.status == 101
    assert answer_extensions(client) == BOTH_WAYS


def test_a_client_that_asks_for_server_no_context_takeover_gets_it_once(gateway):
    client = MemoryClient(gateway, 5555, OFFER + "; server_no_context_takeover")
    assert answer_extensions(client) == BOTH_WAYS


def test_a_publication_is_compressed_once_for_all_its_compressing_subscribers(gateway, monkeypatch):
    calls = []
    real_deflate = compression.deflate
    monkeypatch.setattr(compression, "deflate", lambda *a: calls.append(a) or real_deflate(*a))
    compressing = [subscribed(gateway, "BTCUSDT@depth", OFFER) for _ in range(3)]
    plain = subscribed(gateway)
    raw_frames(plain), [raw_frames(c) for c in compressing]  # the snapshots, if any
    data = depth()
    publish(gateway, "ex:BTCUSDT@depth", data)
    frames = [raw_frames(client) for client in compressing]
    assert len(calls) == 1  # one compression, three deliveries
    assert frames[0] == frames[1] == frames[2] and len(frames[0]) == 1
    first, body = frames[0][0]
    assert first == 0x80 | RSV1 | 0x1  # FIN, compressed, text
    assert len(body) < len(data) / 2
    expected = {"event": "BTCUSDT@depth", "data": json.loads(data)}
    assert json.loads(inflate(body)) == expected
    [(first_plain, body_plain)] = raw_frames(plain)
    assert first_plain == 0x81 and json.loads(body_plain) == expected


def test_each_compressed_frame_reads_on_its_own_without_what_came_before(gateway):
    client = subscribed(gateway, "BTCUSDT@depth", OFFER)
    raw_frames(client)
    for _ in range(3):  # the same message thrice: with context, the 2nd and 3rd would be tiny
        publish(gateway, "ex:BTCUSDT@depth", depth())
    bodies = [body for _first, body in raw_frames(client)]
    assert len(set(bodies)) == 1
    for body in bodies:
        assert json.loads(inflate(body))["data"]["u"] == 7


def test_replies_and_short_messages_go_out_uncompressed(gateway):
    client = MemoryClient(gateway, 5555, OFFER)
    client.send({"op": "subscribe", "channel": "BTCUSDT@trades"})
    [(first, body)] = raw_frames(client)
    assert first == 0x81 and json.loads(body) == {"result": True}
    publish(gateway, "ex:BTCUSDT@trades", "[]")
    [(first, body)] = raw_frames(client)  # compressing 33 bytes does not make them shorter
    assert first == 0x81 and json.loads(body) == {"event": "BTCUSDT@trades", "data": []}


def test_an_incompressible_message_is_sent_plain():
    payload = os.urandom(300)
    frame = SharedFrame(payload, binary=True)
    assert frame.deflated(15) is frame.payloadHybi


def test_the_window_fits_the_message_and_never_exceeds_the_clients_limit(gateway):
    assert [fitting_window(n) for n in (1, 250, 251, 4000, 10**6)] == [9, 9, 10, 13, 15]
    client = subscribed(gateway, "BTCUSDT@depth", OFFER + "; server_max_window_bits=10")
    assert answer_extensions(client) == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; "
        "client_no_context_takeover"
    )
    raw_frames(client)
    data = depth(200)  # 9 KB: a window of 14 bits would fit it
    publish(gateway, "ex:BTCUSDT@depth", data)
    [(first, body)] = raw_frames(client)
    assert first & RSV1
    assert json.loads(inflate(body, window=10))["data"] == json.loads(data)


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        ("permessage-deflate; server_max_window_bits=8", None),  # zlib cannot: declined
        ("permessage-deflate; foo=1", None),
        ("permessage-deflate; client_max_window_bits=16", None),
        ("permessage-deflate; foo=1, permessage-deflate", BOTH_WAYS),  # the next offer
        ("permessage-bzip2; foo, permessage-deflate", BOTH_WAYS),
        (
            "permessage-deflate; server_max_window_bits=8, "
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; "
            "client_no_context_takeover",
        ),
    ],
)
def test_an_offer_that_cannot_be_parsed_is_declined_not_refused(gateway, offers, answer):
    client = MemoryClient(gateway, 5555, f"Sec-WebSocket-Extensions: {offers}")
    assert client.status == 101
    assert answer_extensions(client) == answer
    assert client.request({"op": "subscribe", "channel": "BTCUSDT@depth"}) == [{"result": True}]


def test_with_no_compression_an_unparseable_offer_is_declined_too():
    gateway = memory_gateway(Clock(), GatewayConfig(no_compression=True))
    client = MemoryClient(gateway, 5555, OFFER + "; server_max_window_bits=8")
    assert client.status == 101 and answer_extensions(client) is None


def test_compressed_client_frames_are_read_and_nothing_is_kept_after_them(gateway):
    client = MemoryClient(gateway, 5555, OFFER)
    subscribe = json.dumps({"op": "subscribe", "channel": "BTCUSDT@depth"}).encode()
    client.protocol.dataReceived(compressed_client_frame(subscribe))
    assert client.messages() == [{"result": True}]
    negotiated = negotiated_compression(client.protocol)
    assert negotiated._decompressor is None and negotiated._compressor is None


def test_a_compressed_frame_that_inflates_past_the_message_limit_is_closed_1009(gateway):
    victim = subscribed(gateway, "BTCUSDT@depth", OFFER)
    raw_frames(victim)
    bomb = MemoryClient(gateway, 5556, OFFER)
    payload = b'{"op":"subscribe","channel":"' + b"A" * (10 * 1024 * 1024) + b'"}'
    bomb.protocol.dataReceived(compressed_client_frame(payload))  # 10 KB on the wire
    bomb.frames()
    assert bomb.close_code == 1009
    assert negotiated_compression(bomb.protocol)._decompressor is not None  # mid-message
    bomb.disconnect()  # its zlib state goes with the connection, not with the collector
    assert negotiated_compression(bomb.protocol)._decompressor is None
    publish(gateway, "ex:BTCUSDT@depth", depth())
    assert len(raw_frames(victim)) == 1


def test_a_client_compressing_with_context_after_refusing_it_is_closed(gateway):
    client = MemoryClient(gateway, 5555, OFFER)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    message = json.dumps({"op": "subscribe", "channel": "BTCUSDT@depth"}).encode()
    for _ in range(2):  # the second refers back into the first: unreadable on its own
        body = (compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        frame = client_frame(body)
        client.protocol.dataReceived(bytes((frame[0] | RSV1,)) + frame[1:])
    client.frames()
    assert client.close_code == 1007


def test_no_compression_refuses_every_offer():
    gateway = memory_gateway(Clock(), GatewayConfig(no_compression=True))
    client = subscribed(gateway, "BTCUSDT@depth", OFFER)
    assert answer_extensions(client) is None
    raw_frames(client)
    publish(gateway, "ex:BTCUSDT@depth", depth())
    [(first, _body)] = raw_frames(client)
    assert first == 0x81


def test_a_snapshot_is_compressed_once_for_a_storm_of_subscribers_and_again_when_it_changes(
    gateway, monkeypatch
):
    calls = []
    real_deflate = compression.deflate
    monkeypatch.setattr(compression, "deflate", lambda *a: calls.append(a) or real_deflate(*a))
    channel = "ex:ETHUSDT@depth"

    def book(u: int) -> Publication:
        push = {"event": "ETHUSDT@depth", "data": {"type": "snapshot", **json.loads(depth())}}
        push["data"]["u"] = u
        return Publication(json.dumps(push).encode())

    gateway.node.publish(channel, book(1), snapshot=book(1))
    gateway.reactor.advance(0)

    def snapshot_of_a_newcomer() -> tuple[int, bytes]:
        client = MemoryClient(gateway, 5555, OFFER)
        client.send({"op": "subscribe", "channel": "ETHUSDT@depth"})
        [(_, reply), snapshot] = raw_frames(client)
        assert json.loads(reply) == {"result": True}
        return snapshot

    storm = [snapshot_of_a_newcomer() for _ in range(5)]
    assert len(calls) == 1
    assert all(snapshot == storm[0] for snapshot in storm)
    assert storm[0][0] & RSV1 and json.loads(inflate(storm[0][1]))["data"]["u"] == 1
    gateway.node.publish(channel, book(2), snapshot=book(2))  # a live push, then a newcomer
    gateway.reactor.advance(0)
    _first, body = snapshot_of_a_newcomer()
    assert json.loads(inflate(body))["data"]["u"] == 2
    assert len(calls) == 3  # the live push (shared by the five) and the new snapshot


def test_connections_with_other_window_limits_share_a_frame_the_message_fits(monkeypatch):
    calls = []
    real_deflate = compression.deflate
    monkeypatch.setattr(compression, "deflate", lambda *a: calls.append(a) or real_deflate(*a))
    frame = SharedFrame(json.dumps({"event": "BTCUSDT@depth", "data": depth(3)}).encode())
    assert fitting_window(len(frame.payload)) == 10
    assert frame.deflated(15) is frame.deflated(12) is frame.deflated(10)
    assert [window for _payload, window in calls] == [10]
    assert frame.deflated(9) is not frame.deflated(15)  # a smaller limit: its own
    assert [window for _payload, window in calls] == [10, 9]
