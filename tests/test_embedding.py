"""Embedding: makeService in an application, and the resources in an existing site."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from exchange_stream.core.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.service import makeService, mount
from exchange_stream.services.auth import StaticAuthenticator
from tests.support import LOCAL, connect, free_port, http_client, publish


@pytest_twisted.ensureDeferred
async def test_make_service_serves_websocket_and_api(auth_backend):
    ws_port, api_port = free_port(), free_port()
    config = GatewayConfig(
        ws=f"tcp:{ws_port}:interface=127.0.0.1",
        api=f"tcp:{api_port}:interface=127.0.0.1",
        path="/stream/v1",
        auth_url=auth_backend.url,
    )
    service = makeService(config)
    service.startService()
    try:
        client = await connect(ws_port, "/stream/v1")
        assert await client.request({"op": "auth", "token": "token-1001"}) == {"result": True}
        assert await client.request({"op": "subscribe", "channel": "@position"}) == {"result": True}
        status, answer = await publish(api_port, {"c": "ex:1001@position", "d": "{}"})
        assert (status, answer["r"]["s"]) == (200, 1)
        assert await client.next() == {}
        assert service.getServiceNamed("gateway").hub.subscriber_count == 1
        await client.close()
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_resources_mount_in_an_existing_site():
    """An application keeps its own pages and adds the gateway under paths it chooses."""
    gateway = Gateway(authenticator=StaticAuthenticator({"app-token": "u-7"}))
    root = Resource()
    root.putChild(b"", Data(b"my exchange", "text/plain"))
    mount(root, "/realtime/ws", gateway.websocket_resource())
    mount(root, "/internal", gateway.api_resource())
    port = await serverFromString(reactor, LOCAL).listen(Site(root))
    number = port.getHost().port
    try:
        client = await connect(number, "/realtime/ws")
        assert await client.request({"op": "auth", "token": "app-token"}) == {"result": True}
        await client.request({"op": "subscribe", "channel": "@order"})
        response = await http_client().post(
            f"http://127.0.0.1:{number}/internal/v1/mesh/publish",
            data=json.dumps({"c": "ex:u-7@order", "d": '{"id":1}'}).encode(),
        )
        assert response.code == 200
        assert await client.next() == {"id": 1}
        await client.close()
    finally:
        await port.stopListening()


def test_injected_parts_keep_an_embedded_gateway_to_one_process():
    shared = GatewayConfig(mesh="redis://127.0.0.1:6379/0")
    service = makeService(shared, authenticator=StaticAuthenticator({}))
    assert service.workers is None  # not one per core: workers would not get the authenticator
    with pytest.raises(ValueError, match="cannot share injected authenticator"):
        makeService(
            GatewayConfig(mesh="redis://127.0.0.1:6379/0", workers=2),
            authenticator=StaticAuthenticator({}),
        )
