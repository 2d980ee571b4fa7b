"""The internal HTTP API (DESIGN section 4), compatible with CONNMIX's mesh API.

``POST /v1/mesh/publish`` answers ``{"E":null,"r":{"s":n,"f":0}}`` once the mesh accepted the
message, or ``{"E":{"c":N,"m":"..."}}`` with an HTTP status that says whether to retry:
nothing accepted is silently dropped, and a 503 means nothing was sent.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, UnsupportedMethod

from exchange_stream.metrics import node_processes, node_receiving
from exchange_stream.publishing import (
    ApiError,
    PublishRequest,
    decode_body,
    parse_batch,
    parse_kick,
    parse_publish,
)
from exchange_stream.ws_api import mesh_api_resource

if TYPE_CHECKING:
    from exchange_stream.gateway import Gateway


def _write_json(request: Request, status: int, body: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body, separators=(",", ":")).encode()


def _finish(request: Request, status: int, body: dict) -> None:
    request.write(_write_json(request, status, body))
    request.finish()


class PublishResource(Resource):
    """``POST /v1/mesh/publish``: one publish (a JSON object) or a batch (a JSON array of
    them, all checked before any is sent). Any other method is 405, any path below it 404.
    ``parse`` turns one object into a request; :class:`KickResource` reuses all the rest."""

    isLeaf = True
    parse = staticmethod(parse_publish)
    batches = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self._publisher = gateway.publisher
        token = gateway.config.api_token
        self._expected_authorization = f"Bearer {token}".encode() if token else None
        self._max_body = gateway.config.max_publish_size

    def render(self, request: Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return b""
        if request.method != b"POST":
            raise UnsupportedMethod([b"POST"])  # twisted.web answers 405 with Allow: POST
        return self.render_POST(request)

    def render_POST(self, request: Request) -> bytes | int:
        try:
            requests, batch = self._read(request)
        except ApiError as error:
            self._publisher.count_error(error)
            return _write_json(request, error.status, error.answer())
        answered = self._publisher.publish_all(requests, batch)
        at_once: list[tuple[int, dict]] = []
        answered.addCallback(at_once.append)
        if at_once:  # the mesh answered synchronously (memory:): twisted.web's plain path
            return _write_json(request, *at_once[0])
        hung_up: list[bool] = []
        request.notifyFinish().addErrback(lambda _: hung_up.append(True))
        answered.addCallback(lambda _: hung_up or _finish(request, *at_once[0]))
        return NOT_DONE_YET

    def _read(self, request: Request) -> tuple[list[PublishRequest], bool]:
        if self._expected_authorization is not None:
            given = request.getHeader(b"Authorization") or b""
            if not hmac.compare_digest(given, self._expected_authorization):
                raise ApiError(401, 102, "missing or wrong bearer token")
        body = request.content.read(self._max_body + 1)
        if len(body) > self._max_body:
            raise ApiError(413, 103, f"body larger than {self._max_body} bytes")
        refusal = self._publisher.refusal()
        if refusal is not None:
            raise refusal
        message = decode_body(body)
        if self.batches and isinstance(message, list):
            return parse_batch(message), True
        return [self.parse(message)], False


class KickResource(PublishResource):
    """``POST /v1/mesh/kick {"uid": 1001}``: every node ends that user's private
    subscriptions and login; ``s`` in the answer is the number of nodes reached."""

    parse = staticmethod(parse_kick)
    batches = False


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self._gateway = gateway

    def render_GET(self, request: Request) -> bytes:
        """Healthy while the mesh publishes and every process that reports receives. A worker
        that is being restarted does not make the node unhealthy (its clients went to the
        others); one that reports a deaf mesh does (its clients would miss messages), and so
        does one that is alive but silent (stuck, holding its clients)."""
        gateway = self._gateway
        mesh = gateway.mesh
        processes = node_processes(gateway)
        reporting = [figures for figures in processes if figures is not None]
        receiving = node_receiving(gateway, processes)
        healthy = bool(mesh.available) and receiving and not gateway.draining
        body = {
            "status": "ok" if healthy else "draining" if gateway.draining else "unavailable",
            "mesh": "up" if mesh.available and receiving else "down",
            "publishing": bool(mesh.available),
            "receiving": receiving,
            "connections": sum(figures["connections"] for figures in reporting),
        }
        if len(processes) > 1:
            body["processes"] = {"expected": len(processes), "reporting": len(reporting)}
        return _write_json(request, 200 if healthy else 503, body)


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self._registry = gateway.metrics.registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)


def build_api(gateway: Gateway) -> Resource:
    root = Resource()
    v1 = Resource()
    mesh = Resource()
    root.putChild(b"v1", v1)
    v1.putChild(b"mesh", mesh)
    mesh.putChild(b"publish", PublishResource(gateway))
    mesh.putChild(b"kick", KickResource(gateway))
    websocket = Resource()
    root.putChild(b"ws", websocket)
    websocket.putChild(b"v1", mesh_api_resource(gateway))
    root.putChild(b"healthz", HealthResource(gateway))
    root.putChild(b"metrics", MetricsResource(gateway))
    return root
