"""Test helpers: a fake auth back end, a running gateway on free ports, an Autobahn client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from exchange_stream.adapters.upstream import quiet_http_client
from exchange_stream.core.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.service import api_site, websocket_site
from exchange_stream.services.auth import StaticAuthenticator

LOCAL = "tcp:0:interface=127.0.0.1"


def open_protocol(
    config: GatewayConfig | None = None, transport: StringTransport | None = None
) -> tuple[Gateway, object, StringTransport]:
    """A gateway on a fake clock and one of its connections on a StringTransport, as if the
    handshake were done (state OPEN), with nothing written yet: (gateway, protocol, transport).
    Frames leave at the end of a reactor turn: ``gateway.reactor.advance(0)``."""
    from autobahn.websocket.protocol import WebSocketProtocol

    gateway = Gateway(config or GatewayConfig(), reactor=Clock(),
                      authenticator=StaticAuthenticator({}))  # fmt: skip
    protocol = gateway.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = transport or StringTransport()
    protocol.makeConnection(transport)
    protocol.state = WebSocketProtocol.STATE_OPEN
    protocol.websocket_version = 13
    transport.clear()
    return gateway, protocol, transport


class AuthBackend(Resource):
    """The exchange's token endpoint: ``answers`` maps a token to (HTTP status, body)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[bytes] = []
        self.delay = 0.0

    def user(self, token: str, uid: object) -> None:
        self.answers[token] = (200, json.dumps({"uid": uid}).encode())

    def render_POST(self, request):
        body = request.content.read()
        self.requests.append(body)
        token = json.loads(body).get("token")
        status, answer = self.answers.get(token, (401, b'{"error":"bad token"}'))

        def respond():
            if request._disconnected:
                return
            request.setResponseCode(status)
            request.write(answer)
            request.finish()

        reactor.callLater(self.delay, respond)
        return NOT_DONE_YET


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
    api = await serverFromString(reactor, LOCAL).listen(api_site(gateway))
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

    async def nothing_within(self, seconds: float = 0.2) -> bool:
        """True when no frame arrives within ``seconds``."""
        await deferLater(reactor, seconds, lambda: None)
        return not self.received.pending

    async def close(self) -> None:
        if not self.closed.called:
            self.protocol.sendClose(1000)
        await self.closed


async def connect(port: int, path: str = "/exchange-stream", **factory_args) -> Client:
    client = Client()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}", **factory_args)
    factory.protocol = ClientProtocol
    factory.client = client
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    await client.opened
    return client
