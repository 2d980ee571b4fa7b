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

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny

from exchange_stream.adapters.admitted import AdmittedFactory
from exchange_stream.adapters.fastwrite import FastSendProtocol, TurnWriter
from exchange_stream.core.encoding import encode
from exchange_stream.core.mesh_api import ApiError, decode_body, invalid
from exchange_stream.services.api import MeshApi
from exchange_stream.services.connections import Admission


class MeshApiProtocol(FastSendProtocol):
    ticket: str | None = None  # the API port's admission counts the connection by this

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.ticket is not None:
            self.factory.admission.leave(self.ticket)
            self.ticket = None

    def onConnect(self, request) -> None:
        if not self.factory.api.authorized(request.headers.get("authorization", "").encode()):
            raise ConnectionDeny(401, "missing or wrong bearer token")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        request_id = None
        try:
            message = decode_body(payload)
            if not isinstance(message, dict):
                raise invalid("a request is a JSON object")
            request_id = message.get("i")
            method, params = message.get("m"), message.get("p")
            api = self.factory.api
            if not isinstance(method, str) or method not in api.methods:
                raise invalid(f'"m" must be one of {", ".join(api.methods)}')
            requests, batch = api.requests(method, params)
        except ApiError as error:
            self.factory.api.count_refusal(error)
            self._answer(error.answer(), request_id)
            return
        published = api.publish_all(requests, batch)
        published.addCallback(self._published, request_id)

    def _published(self, answer: tuple[int, dict], request_id) -> None:
        self._answer(answer[1], request_id)

    def _answer(self, answer: dict, request_id) -> None:
        if self.state == self.STATE_OPEN:
            answer = {**answer, "i": request_id}
            self.send_text(encode(answer))


class MeshApiFactory(AdmittedFactory, WebSocketServerFactory):
    """Back ends' publish connections: what they mean (the token, the methods, the largest
    request) is ``api``'s; ``admission`` counts the API port's connections
    (``TicketedWebSocketResource``)."""

    protocol = MeshApiProtocol

    def __init__(
        self,
        api: MeshApi,
        turn_writer: TurnWriter,
        ping_interval: float,
        ping_timeout: float,
        admission: Admission,
    ) -> None:
        super().__init__(server="exchange-stream")
        self.admission = admission
        self.api = api
        self.turn_writer = turn_writer
        self.setProtocolOptions(
            maxFramePayloadSize=api.max_body,
            maxMessagePayloadSize=api.max_body,
            webStatus=False,
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
            allowNullOrigin=True,
        )
