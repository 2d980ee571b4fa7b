"""Test helpers, in one place so that no test module imports another.

Three kinds: a gateway in memory on a fake clock with clients speaking WebSocket bytes over a
``StringTransport`` (``memory_gateway``, ``MemoryClient``); a gateway on real sockets in this
process with Autobahn clients (``start_gateway``, ``connect``); and the installed ``twistd``
driven from outside (``real_gateway``, ``http``). Fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from exchange_stream.adapters.upstream import quiet_http_client
from exchange_stream.core.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.service import api_factory, websocket_site
from exchange_stream.services.auth import StaticAuthenticator

LOCAL = "tcp:0:interface=127.0.0.1"
TWISTD = Path(sys.executable).parent / "twistd"
TWIST = Path(sys.executable).parent / "twist"
TOKENS = {"token-1001": 1001, "token-1002": 1002}  # what the auth back ends know


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def until(condition, timeout: float = 10.0, step: float = 0.02) -> None:
    """Wait on the running reactor until ``condition()`` is true (a bound, not a sleep)."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, step, lambda: None)
        waited += step


def eventually(check, timeout: float = 15.0, step: float = 0.05):
    """Poll ``check()`` from a synchronous test until it returns something true; return it."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(step)
    return result


# -- in memory, on a fake clock ----------------------------------------------------------


def memory_gateway(clock: Clock, config: GatewayConfig | None = None, **parts) -> Gateway:
    """A started gateway on ``clock`` with the memory mesh; it knows ``TOKENS`` unless an
    ``authenticator`` or an ``http`` client (for the HTTP auth back end) is given."""
    if "authenticator" not in parts and "http" not in parts:
        parts["authenticator"] = StaticAuthenticator(TOKENS)
    gateway = Gateway(config or GatewayConfig(), reactor=clock, **parts)
    gateway.startService()
    return gateway


def handshake_request(path: str = "/exchange-stream", *headers: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One client-to-server frame: FIN, masked as clients must (mask key 0, so the payload
    stays readable)."""
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole server-to-client frames in ``data`` as (opcode, payload), and what is left."""
    frames = []
    while len(data) >= 2:
        assert data[0] & 0x80 and not data[1] & 0x80, "the gateway sends whole, unmasked frames"
        size, offset = data[1] & 0x7F, 2
        if size == 126:
            size, offset = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(data[2:10], "big"), 10
        if len(data) < offset + size:
            break
        frames.append((data[0] & 0x0F, data[offset : offset + size]))
        data = data[offset + size :]
    return frames, data


class MemoryClient:
    """One WebSocket client of a gateway on a fake clock: the real handshake and frames, as
    bytes on a ``StringTransport``. Like a TCP transport, one that the gateway closes reports
    ``connectionLost`` at the end of the turn. ``status`` is the handshake's HTTP status.

    It speaks to the gateway's WebSocket factory, or through ``site`` (``websocket_site``,
    twisted.web's HTTP handling first, as on the real port) when one is given."""

    def __init__(self, gateway: Gateway, port: int = 5555, *headers: str, site=None) -> None:
        self.clock = gateway.reactor
        address = IPv4Address("TCP", "127.0.0.1", port)
        self.protocol = (site or gateway.factory).buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.transport.protocol = self.protocol  # as on TCP: WebSocketResource replaces it
        self.protocol.makeConnection(self.transport)
        self._lost = False
        self.close_code: int | None = None
        self._read = 0
        self._unparsed = b""
        self.protocol.dataReceived(handshake_request(gateway.config.path, *headers))
        self.pump()
        self.protocol = self.transport.protocol  # the WebSocket protocol, after a site
        head, _, _ = self.transport.value().partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self._read = len(head) + 4  # the frames after the answer are read by frames()

    def pump(self) -> None:
        """End the reactor turn: pending frames are written, closed connections lost."""
        self.clock.advance(0)
        if self.transport.disconnecting and not self._lost:
            self._lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    @property
    def lost(self) -> bool:
        """The connection is gone (after the end of the current turn)."""
        self.pump()
        return self._lost

    def send(self, message: object, opcode: int = 0x1) -> None:
        raw = message if isinstance(message, bytes | str) else json.dumps(message)
        self.protocol.dataReceived(client_frame(raw.encode() if isinstance(raw, str) else raw,
                                                opcode))  # fmt: skip

    def frames(self) -> list[tuple[int, bytes]]:
        """The frames written since the last call, as (opcode, payload)."""
        self.pump()
        data = self.transport.value()
        frames, self._unparsed = server_frames(self._unparsed + data[self._read :])
        self._read = len(data)
        for opcode, payload in frames:
            if opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big")
        return frames

    def messages(self) -> list:
        """The text frames written since the last call, decoded; other frames are dropped."""
        return [json.loads(payload) for opcode, payload in self.frames() if opcode == 0x1]

    def request(self, message: object) -> list:
        self.send(message)
        return self.messages()

    def answer_close(self) -> None:
        """Echo the gateway's close frame, as a well-behaved client does."""
        self.send(b"", opcode=0x8)
        self.pump()

    def disconnect(self) -> None:
        """The client's TCP connection ends."""
        if not self._lost:
            self._lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


def stub_request(stub, method: str, url: str, **kwargs) -> tuple[int, object, bytes]:
    """One request through a ``treq.testing.StubTreq``, run to completion: (status, headers,
    body)."""
    results = []
    stub.request(method, url, **kwargs).addCallback(
        lambda r: treq.content(r).addCallback(lambda body: results.append((r, body)))
    )
    stub.flush()
    response, body = results[0]
    return response.code, response.headers, body


def open_protocol(
    config: GatewayConfig | None = None, transport: StringTransport | None = None
) -> tuple[Gateway, object, StringTransport]:
    """A gateway on a fake clock and one of its connections on a StringTransport, as if the
    handshake were done (state OPEN), with nothing written yet: (gateway, protocol, transport).
    Frames leave at the end of a reactor turn: ``gateway.reactor.advance(0)``."""
    gateway = Gateway(config or GatewayConfig(), reactor=Clock(),
                      authenticator=StaticAuthenticator({}))  # fmt: skip
    protocol = gateway.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = transport or StringTransport()
    protocol.makeConnection(transport)
    protocol.state = WebSocketProtocol.STATE_OPEN
    protocol.websocket_version = 13
    transport.clear()
    return gateway, protocol, transport


class Recorder:
    """A subscriber that records the prepared frames written to it."""

    def __init__(self) -> None:
        self.frames: list = []

    def sendPreparedMessage(self, prepared) -> None:
        self.frames.append(prepared)


def subscribe_live(node, subscriber, channel: str) -> Deferred:
    """Subscribe and release at once, as a session does after answering."""
    subscribed = node.subscribe(subscriber, channel)
    return subscribed.addCallback(lambda snapshot: node.release(subscriber, channel, snapshot))


class AuthBackend(Resource):
    """The exchange's token endpoint: ``answers`` maps a token to (HTTP status, body). With a
    ``delay`` the answer comes that many seconds later on ``clock`` (the reactor by default)."""

    isLeaf = True

    def __init__(self, clock=None) -> None:
        super().__init__()
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[bytes] = []
        self.delay = 0.0
        self.clock = clock or reactor
        for token, uid in TOKENS.items():
            self.user(token, uid)

    def user(self, token: str, uid: object, expires: float | None = None) -> None:
        answer = {"uid": uid} if expires is None else {"uid": uid, "exp": expires}
        self.answers[token] = (200, json.dumps(answer).encode())

    def render_POST(self, request):
        body = request.content.read()
        self.requests.append(body)
        token = json.loads(body).get("token")
        status, answer = self.answers.get(token, (401, b'{"error":"bad token"}'))
        if not self.delay:
            request.setResponseCode(status)
            return answer

        def respond():
            if request._disconnected:
                return
            request.setResponseCode(status)
            request.write(answer)
            request.finish()

        self.clock.callLater(self.delay, respond)
        return NOT_DONE_YET


# -- real sockets, in this process -------------------------------------------------------


@dataclass
class RunningGateway:
    gateway: Gateway
    ws_port: int
    api_port: int
    listeners: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}{self.gateway.config.path}"

    async def publish(self, channel: str, data: str, **extra) -> tuple[int, dict]:
        return await publish(self.api_port, {"c": channel, "d": data, **extra})

    async def health(self) -> tuple[int, dict]:
        response = await http_client().get(f"http://127.0.0.1:{self.api_port}/healthz")
        return response.code, json.loads(await treq.content(response))

    async def metrics(self) -> list[str]:
        response = await http_client().get(f"http://127.0.0.1:{self.api_port}/metrics")
        return (await treq.content(response)).decode().splitlines()

    async def connect(self) -> Client:
        return await connect(self.ws_port, self.gateway.config.path)

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stopListening()
        await self.gateway.stopService()


async def start_gateway(config: GatewayConfig, **gateway_args) -> RunningGateway:
    gateway = Gateway(config, **gateway_args)
    gateway.startService()
    ws = await serverFromString(reactor, LOCAL).listen(websocket_site(gateway))
    api = await serverFromString(reactor, LOCAL).listen(api_factory(gateway))
    return RunningGateway(gateway, ws.getHost().port, api.getHost().port, [ws, api])


_http = None


def http_client():
    global _http
    if _http is None:
        _http = quiet_http_client(reactor)
    return _http


async def publish(
    api_port: int, body: object, headers: dict | None = None, path: str = "/v1/mesh/publish"
) -> tuple[int, dict]:
    """POST to the publish API (or ``path``); return (HTTP status, decoded JSON answer)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await http_client().post(
        f"http://127.0.0.1:{api_port}{path}", data=raw, headers=headers or {}
    )
    return response.code, json.loads(await treq.content(response))


class ClientProtocol(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.client._opened(self)

    def onMessage(self, payload, isBinary):
        self.factory.client.received.put((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.factory.client._closed(code, reason)


class Client:
    """An Autobahn client with a queue of received frames."""

    def __init__(self) -> None:
        self.received: DeferredQueue = DeferredQueue()
        self.protocol: ClientProtocol | None = None
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()

    def _opened(self, protocol):
        self.protocol = protocol
        self.opened.callback(self)

    def _closed(self, code, reason):
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback((code, reason))

    def send(self, message: object) -> None:
        raw = message if isinstance(message, str | bytes) else json.dumps(message)
        self.protocol.sendMessage(raw.encode() if isinstance(raw, str) else raw)

    async def next(self, timeout: float = 5.0) -> dict:
        """The next frame, decoded as JSON."""
        payload, _ = await self.next_raw(timeout)
        return json.loads(payload)

    async def next_raw(self, timeout: float = 5.0) -> tuple[bytes, bool]:
        return await self.received.get().addTimeout(timeout, reactor)

    async def request(self, message: object) -> dict:
        self.send(message)
        return await self.next()

    async def close(self) -> None:
        if not self.closed.called:
            self.protocol.sendClose(1000)
        await self.closed


async def connect(port: int, path: str = "/exchange-stream", **factory_args) -> Client:
    """An open client; raises ConnectionError if the handshake is refused."""
    client = Client()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}", **factory_args)
    factory.protocol = ClientProtocol
    factory.client = client
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    await client.opened
    return client


async def handshake(
    port: int, path: str = "/exchange-stream", **factory_args
) -> tuple[Client | None, int | None]:
    """Connect; return (client, None) or (None, the HTTP status that refused us)."""
    try:
        return await connect(port, path, **factory_args), None
    except ConnectionError as refused:
        status = re.search(r"upgrade failed \[(\d+)\]", str(refused))
        return None, int(status.group(1)) if status else None


# -- the installed twistd, from outside --------------------------------------------------


class SeedAuthHandler(BaseHTTPRequestHandler):
    """The seed's ``/websocket_auth``: ``{"token":"***"}`` → ``{"uid":1001}``."""

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        token = json.loads(self.rfile.read(length)).get("token")
        known = {"***": 1001, "token-1002": 1002}
        status, body = (200, {"uid": known[token]}) if token in known else (401, {})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args):
        pass


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """A blocking HTTP request: (status, body), whatever the status."""
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextlib.contextmanager
def real_gateway(directory: Path, *args: str):
    """``twistd -n exchange-stream`` in ``directory``, on free ports, healthy: yields
    (process, WebSocket URL, API base URL, log path); killed at the end if still running."""
    ws_port, api_port = free_port(), free_port()
    log = directory / "twistd.log"
    process = subprocess.Popen(
        [
            str(TWISTD), "-n", "--pidfile=", "exchange-stream",
            "--ws", f"tcp:{ws_port}:interface=127.0.0.1",
            "--api", f"tcp:{api_port}:interface=127.0.0.1",
            *args,
        ],
        cwd=directory, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if http("GET", f"{api}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gateway did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield process, f"ws://127.0.0.1:{ws_port}/exchange-stream", api, log
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def flushed(depth) -> list[dict]:
    """A depth book's flush, its update and snapshot read back from their JSON texts; each
    text is checked to be what the gateway's one encoder writes for that value, byte for
    byte (the book writes its messages itself, joined from the texts of its levels)."""
    from exchange_stream.core.encoding import encode_text

    messages = depth.flush()
    assert messages is not None, "nothing was flushed"
    values = [json.loads(text) for text in messages]
    assert [encode_text(value) for value in values] == list(messages)
    return values
