"""``--ws unix:...`` (a proxy in front on the same host): clients connect and subscribe."""

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint

from exchange_stream.core.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.service import websocket_site
from exchange_stream.services.auth import StaticAuthenticator
from tests.support import Client, ClientProtocol


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_listener_admits_and_answers(tmp_path):
    gateway = Gateway(GatewayConfig(), authenticator=StaticAuthenticator({}))
    gateway.startService()
    path = str(tmp_path / "ws.sock")
    port = await UNIXServerEndpoint(reactor, path).listen(websocket_site(gateway))
    client = Client()
    factory = WebSocketClientFactory("ws://localhost/exchange-stream")
    factory.protocol = ClientProtocol
    factory.client = client
    try:
        await UNIXClientEndpoint(reactor, path).connect(factory)
        await client.opened
        answer = await client.request({"op": "subscribe", "channel": "BTCUSDT@depth", "id": 1})
        assert answer == {"result": True, "id": 1}
        await client.close()
    finally:
        await port.stopListening()
        await gateway.stopService()
