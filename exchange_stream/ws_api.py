"""CONNMIX's persistent publish API: a WebSocket at ``/ws/v1`` on the internal API port.

For back ends that publish often: one connection, no HTTP request per message.

    → {"m":"mesh.publish","p":{"c":"ex:1001@balance","d":"{...}"},"i":7}
    ← {"E":null,"r":{"s":1,"f":0},"i":7}
    ← {"E":{"c":101,"m":"..."},"i":7}

``p`` takes every field of the HTTP publish (``t``, ``retain``, ``snapshot``), or an array of
them: a batch, answered like the HTTP batch (``"r"`` an array); ``mesh.kick`` takes
``{"uid":...}``. Batches are what makes one connection carry tens of thousands of publishes a
second: a frame costs far more to receive than the publish it carries. With ``--api-token``
the handshake needs ``Authorization: Bearer ...``.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny

from exchange_stream.fastwrite import FastSendProtocol
from exchange_stream.publishing import (
    ApiError,
    decode_body,
    invalid,
    parse_batch,
    parse_kick,
    parse_publish,
)

if TYPE_CHECKING:
    from exchange_stream.gateway import Gateway

METHODS = {"mesh.publish": parse_publish, "mesh.kick": parse_kick}
BATCHES = {"mesh.publish"}


class MeshApiProtocol(FastSendProtocol):
    def onConnect(self, request) -> None:
        expected = self.factory.expected_authorization
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise ConnectionDeny(401, "missing or wrong bearer token")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        request_id = None
        try:
            message = decode_body(payload)
            if not isinstance(message, dict):
                raise invalid("a request is a JSON object")
            request_id = message.get("i")
            method, params = message.get("m"), message.get("p")
            parse = METHODS.get(method)
            if parse is None:
                raise invalid(f'"m" must be one of {", ".join(METHODS)}')
            batch = method in BATCHES and isinstance(params, list)
            requests = parse_batch(params) if batch else [parse(params)]
        except ApiError as error:
            self.factory.publisher.count_error(error)
            self._answer(error.answer(), request_id)
            return
        published = self.factory.publisher.publish_all(requests, batch)
        published.addCallback(self._published, request_id)

    def _published(self, answer: tuple[int, dict], request_id) -> None:
        self._answer(answer[1], request_id)

    def _answer(self, answer: dict, request_id) -> None:
        if self.state == self.STATE_OPEN:
            answer = {**answer, "i": request_id}
            self.send_text(json.dumps(answer, separators=(",", ":")).encode())


class MeshApiFactory(WebSocketServerFactory):
    protocol = MeshApiProtocol

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(server="exchange-stream")
        self.publisher = gateway.publisher
        self.turn_writer = gateway.turn_writer
        token = gateway.config.api_token
        self.expected_authorization = f"Bearer {token}".encode() if token else None
        size = gateway.config.max_publish_size
        self.setProtocolOptions(
            maxFramePayloadSize=size,
            maxMessagePayloadSize=size,
            webStatus=False,
            autoPingInterval=gateway.config.ping_interval,
            autoPingTimeout=gateway.config.ping_timeout,
            allowNullOrigin=True,
        )


def mesh_api_resource(gateway: Gateway) -> WebSocketResource:
    return WebSocketResource(MeshApiFactory(gateway))
