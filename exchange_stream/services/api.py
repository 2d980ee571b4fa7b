"""What the internal API means, whichever HTTP implementation carries it.

The twisted.web resources (``adapters.web``, for applications that mount the API in their own
site) and the lean HTTP/1.1 protocol of the API port (``adapters.http_api``) both hand a
request's parts here and write back what comes out: a publish or a kick (bearer token, size,
refusals, parsing, publishing), ``/healthz`` and ``/metrics``. The ``/ws/v1`` WebSocket
(``adapters.ws_api``) takes its token check, its methods and their parsing from here too. So a
request means the same whichever way it came, and one set of rules is tested.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import partial

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from twisted.internet.defer import Deferred, succeed

from exchange_stream.core.encoding import encode
from exchange_stream.core.mesh_api import (
    ApiError,
    PublishRequest,
    decode_body,
    parse_batch,
    parse_kick,
    parse_publish,
    too_large,
)
from exchange_stream.core.streams import StreamPolicy
from exchange_stream.services.health import Health
from exchange_stream.services.publisher import Publisher

JSON = b"application/json"
METRICS = CONTENT_TYPE_LATEST.encode()

Answer = tuple[int, bytes, bytes]  # HTTP status, content type, body


class MeshApi:
    """The API's answers; ``authorization`` is the header ``--api-token`` requires (None: no
    token), ``max_body`` the largest body (``--max-publish-size``)."""

    def __init__(
        self,
        publisher: Publisher,
        health: Health,
        registry: CollectorRegistry,
        authorization: bytes | None,
        max_body: int,
        streams: StreamPolicy,
    ) -> None:
        self._publisher = publisher
        self._health = health
        self._registry = registry
        self._authorization = authorization
        self.max_body = max_body
        # The methods, by their /ws/v1 name; a publish may be a batch, a kick may not.
        self.methods: dict[str, Callable[[object], PublishRequest]] = {
            "mesh.publish": partial(parse_publish, streams=streams),
            "mesh.kick": parse_kick,
        }

    def authorized(self, authorization: bytes | None) -> bool:
        """Whether a request's ``Authorization`` header is what ``--api-token`` asks."""
        expected = self._authorization
        return expected is None or hmac.compare_digest(authorization or b"", expected)

    def publish(self, authorization: bytes | None, body: bytes) -> Deferred:
        """``POST /v1/mesh/publish``: one publish (a JSON object) or a batch (an array);
        fires with ``(status, answer dict)``, never fails."""
        return self._send(authorization, body, "mesh.publish")

    def kick(self, authorization: bytes | None, body: bytes) -> Deferred:
        """``POST /v1/mesh/kick`` (``{"uid": 1001}``): every node ends that user's login."""
        return self._send(authorization, body, "mesh.kick")

    def requests(self, method: str, message: object) -> tuple[list[PublishRequest], bool]:
        """A decoded request of ``method`` as publish requests, and whether it is a batch;
        ``ApiError`` when it is not one."""
        parse = self.methods[method]
        if method == "mesh.publish" and isinstance(message, list):
            return parse_batch(message, parse), True
        return [parse(message)], False

    def publish_all(self, requests: list[PublishRequest], batch: bool) -> Deferred:
        """Publish parsed requests (``Publisher.publish_all``): ``(status, answer dict)``."""
        return self._publisher.publish_all(requests, batch)

    def health(self) -> Answer:
        healthy, body = self._health.check()
        return (200 if healthy else 503), JSON, encode(body)

    def metrics(self) -> Answer:
        return 200, METRICS, generate_latest(self._registry)

    def count_refusal(self, error: ApiError) -> None:
        """A request refused before it reached here (a body too large to read), counted as
        a refused publish is."""
        self._publisher.count_error(error)

    def _send(self, authorization: bytes | None, body: bytes, method: str) -> Deferred:
        try:
            requests, batch = self._read(authorization, body, method)
        except ApiError as error:
            self._publisher.count_error(error)
            return succeed((error.status, error.answer()))
        return self._publisher.publish_all(requests, batch)

    def _read(
        self, authorization: bytes | None, body: bytes, method: str
    ) -> tuple[list[PublishRequest], bool]:
        if not self.authorized(authorization):
            raise ApiError(401, 102, "missing or wrong bearer token")
        if len(body) > self.max_body:
            raise too_large(self.max_body)
        refusal = self._publisher.refusal()
        if refusal is not None:
            raise refusal
        return self.requests(method, decode_body(body))
