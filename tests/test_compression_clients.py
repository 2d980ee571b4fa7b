"""Compressed frames round-trip through client libraries that are not ours: the
``websockets`` library (which offers permessage-deflate by default and compresses what it
sends) and Autobahn's client, against the installed ``twistd exchange-stream``, and a raw
socket that counts the bytes. Chromium's round trip is in ``test_demo_page.py``.
"""

import contextlib
import json
import socket
import threading
import zlib

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.threads import deferToThread
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.sync.client import connect as sync_connect

from tests.support import Client, ClientProtocol, http, server_frames


def depth(u: int, levels: int = 50, symbol: str = "BTCUSDT") -> str:
    """A depth push as a back end publishes it (``d`` is the frame's text, as it is sent)."""
    rows = [[f"4321{i}.{u % 100:02d}", f"{i}.{u:04d}"] for i in range(levels)]
    data = {"s": symbol, "u": u, "b": rows, "a": rows[::-1]}
    return json.dumps({"event": f"{symbol}@depth", "data": data})


def post(api: str, channel: str, data: str) -> None:
    status, body = http(
        "POST", f"{api}/v1/mesh/publish", json.dumps({"c": channel, "d": data}).encode()
    )
    assert status == 200, body


def test_the_websockets_library_reads_compressed_pushes_and_sends_compressed_ops(
    twistd_gateway,
):
    url, api, _log = twistd_gateway
    with sync_connect(url) as ws:  # compression="deflate" is the library's default
        [extension] = ws.protocol.extensions
        assert isinstance(extension, PerMessageDeflate)
        assert ws.response.headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )
        ws.send(json.dumps({"op": "subscribe", "channel": "BTCUSDT@depth", "id": 1}))
        assert json.loads(ws.recv(5)) == {"result": True, "id": 1}
        sent = [depth(u) for u in range(1, 21)]
        for data in sent:
            post(api, "ex:BTCUSDT@depth", data)
        received = [ws.recv(5) for _ in sent]
    assert received == sent


def test_the_websockets_library_with_a_small_window_reads_large_pushes(twistd_gateway):
    url, api, _log = twistd_gateway
    offer = ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9)
    with sync_connect(url, extensions=[offer], compression=None) as ws:
        ws.send(json.dumps({"op": "subscribe", "channel": "ETHUSDT@depth"}))
        assert json.loads(ws.recv(5)) == {"result": True}
        data = depth(7, levels=400, symbol="ETHUSDT")  # 20 KB, 40 times the window
        post(api, "ex:ETHUSDT@depth", data)
        assert ws.recv(5) == data


def raw_subscriber(url: str, channel: str) -> socket.socket:
    """A handshake offering permessage-deflate on a plain socket, subscribed to ``channel``."""
    host_port = url.split("/")[2]
    host, port = host_port.split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        b"GET /exchange-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert b"server_no_context_takeover" in head
    op = json.dumps({"op": "subscribe", "channel": channel}).encode()
    sock.sendall(bytes((0x81, 0x80 | len(op))) + b"\0\0\0\0" + op)
    assert json.loads(server_frames(read_some(sock, 1))[0][0][1]) == {"result": True}
    return sock


def read_some(sock: socket.socket, frames: int) -> bytes:
    data = b""
    while len(server_frames(data)[0]) < frames:
        data += sock.recv(65536)
    return data


def test_on_the_wire_a_depth_diff_takes_a_third_of_its_bytes_and_inflates_on_its_own(
    twistd_gateway,
):
    url, api, _log = twistd_gateway
    sock = raw_subscriber(url, "SOLUSDT@depth")
    sent = [depth(u, levels=10, symbol="SOLUSDT") for u in range(100, 110)]
    for data in sent:
        post(api, "ex:SOLUSDT@depth", data)
    wire = read_some(sock, len(sent))
    sock.close()
    frames, _rest = server_frames(wire)
    assert len(wire) < sum(len(data) for data in sent) / 3
    for (_opcode, body), data in zip(frames, sent, strict=True):
        assert zlib.decompressobj(-15).decompress(body + b"\0\0\xff\xff") == data.encode()


class _Deflating(WebSocketClientFactory):
    """Autobahn's client, offering permessage-deflate (it offers nothing by default)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer(accept_no_context_takeover=True)],
            perMessageCompressionAccept=self._accept,
        )

    @staticmethod
    def _accept(response: PerMessageDeflateResponse) -> PerMessageDeflateResponseAccept:
        return PerMessageDeflateResponseAccept(response)


@pytest_twisted.ensureDeferred
async def test_autobahns_client_reads_compressed_pushes_and_sends_compressed_ops(
    twistd_gateway,
):
    url, api, _log = twistd_gateway
    client = Client()
    factory = _Deflating(url)
    factory.protocol = ClientProtocol
    factory.client = client
    port = int(url.split(":")[2].split("/")[0])
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    await client.opened
    assert client.protocol._perMessageCompress is not None  # it compresses what it sends
    assert await client.request({"op": "subscribe", "channel": "XRPUSDT@depth"}) == {"result": True}
    sent = [depth(u, symbol="XRPUSDT") for u in range(5)]
    for data in sent:
        await deferToThread(post, api, "ex:XRPUSDT@depth", data)
    received = [(await client.next_raw())[0] for _ in sent]
    assert received == [data.encode() for data in sent]
    await client.close()


def test_many_compressing_clients_at_once_each_read_every_push(twistd_gateway):
    url, api, _log = twistd_gateway
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(sync_connect(url)) for _ in range(30)]
        for ws in clients:
            ws.send(json.dumps({"op": "subscribe", "channel": "DOGEUSDT@depth"}))
            assert json.loads(ws.recv(5)) == {"result": True}
        sent = [depth(u, levels=5, symbol="DOGEUSDT") for u in range(40)]
        reader_results: list[list[int]] = [[] for _ in clients]

        def read(index: int) -> None:
            for _ in sent:
                reader_results[index].append(json.loads(clients[index].recv(10))["data"]["u"])

        readers = [threading.Thread(target=read, args=(i,)) for i in range(len(clients))]
        for reader in readers:
            reader.start()
        for data in sent:
            post(api, "ex:DOGEUSDT@depth", data)
        for reader in readers:
            reader.join(20)
        assert reader_results == [list(range(40))] * len(clients)
