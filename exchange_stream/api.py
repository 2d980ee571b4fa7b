"""The internal HTTP API (DESIGN section 4), compatible with CONNMIX's mesh API.

``POST /v1/mesh/publish`` answers ``{"E":null,"r":{"s":n,"f":0}}`` once the mesh accepted the
message, or ``{"E":{"c":N,"m":"..."}}`` with an HTTP status that says whether to retry:
nothing accepted is silently dropped, and a 503 means nothing was sent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, UnsupportedMethod

from exchange_stream.channels import normalize_uid
from exchange_stream.control import CONTROL_CHANNEL, RESERVED_PREFIX
from exchange_stream.mesh import MeshUnavailable, Publication

if TYPE_CHECKING:
    from exchange_stream.gateway import Gateway

log = Logger()


class ApiError(Exception):
    """A refused publish: HTTP status, CONNMIX error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> ApiError:
    return ApiError(400, 101, message)


def _write_json(request: Request, status: int, body: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body, separators=(",", ":")).encode()


def _finish(request: Request, status: int, body: dict) -> None:
    request.write(_write_json(request, status, body))
    request.finish()


def _error_body(error: ApiError) -> dict:
    return {"E": {"c": error.code, "m": error.message}}


@dataclass(frozen=True, slots=True)
class PublishRequest:
    channel: str
    publication: Publication
    snapshot: Publication | None = None


def parse_publish(body: bytes) -> PublishRequest:
    """Validate a publish body; raise :class:`ApiError` (400 / 101) when it is not one."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise _invalid("body is not JSON") from None
    if not isinstance(message, dict):
        raise _invalid("body must be a JSON object")
    channel = message.get("c")
    if not isinstance(channel, str) or not channel or len(channel) > 1024:
        raise _invalid('"c" must be a non-empty channel name')
    if not channel.isprintable() or " " in channel:
        raise _invalid('"c" must not contain spaces or control characters')
    if channel.startswith(RESERVED_PREFIX):
        raise _invalid(f'channels starting with "{RESERVED_PREFIX}" are the gateway\'s own')
    publication = _parse_data(message.get("d"), message.get("t", "text"))
    retain = message.get("retain", False)
    snapshot = message.get("snapshot")
    if not isinstance(retain, bool):
        raise _invalid('"retain" must be true or false')
    if snapshot is not None and (retain or not isinstance(snapshot, str)):
        raise _invalid('"snapshot" must be text, and not given with "retain"')
    if retain:
        return PublishRequest(channel, publication, publication)
    if snapshot is not None:
        return PublishRequest(channel, publication, Publication(snapshot.encode()))
    return PublishRequest(channel, publication)


def _parse_data(data: object, kind: object) -> Publication:
    if not isinstance(data, str):
        raise _invalid('"d" must be a string')
    if kind == "text":
        return Publication(data.encode())
    if kind == "binary":
        try:
            return Publication(base64.b64decode(data, validate=True), binary=True)
        except (binascii.Error, ValueError):
            raise _invalid('"d" must be base64 when "t" is "binary"') from None
    raise _invalid('"t" must be "text" or "binary"')


class PublishResource(Resource):
    """``POST /v1/mesh/publish``; any other method is 405, any path below it 404.

    ``parse`` turns a body into what to publish; :class:`KickResource` reuses all the rest.
    """

    isLeaf = True
    parse = staticmethod(parse_publish)

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self._gateway = gateway
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
            publish = self._validate(request)
        except ApiError as error:
            self._gateway.metrics.publish_errors.labels(str(error.code)).inc()
            return _write_json(request, error.status, _error_body(error))
        hung_up: list[bool] = []
        request.notifyFinish().addErrback(lambda _: hung_up.append(True))
        accepted = self._gateway.node.publish(
            publish.channel, publish.publication, publish.snapshot
        )
        accepted.addCallback(self._accepted, request, hung_up)
        accepted.addErrback(self._refused, request, hung_up)
        return NOT_DONE_YET

    def _validate(self, request: Request) -> PublishRequest:
        if self._expected_authorization is not None:
            given = request.getHeader(b"Authorization") or b""
            if not hmac.compare_digest(given, self._expected_authorization):
                raise ApiError(401, 102, "missing or wrong bearer token")
        body = request.content.read(self._max_body + 1)
        if len(body) > self._max_body:
            raise ApiError(413, 103, f"body larger than {self._max_body} bytes")
        if self._gateway.draining:
            raise ApiError(503, 104, "node shutting down, nothing was sent; publish elsewhere")
        if not self._gateway.mesh.available:
            raise ApiError(503, 104, "mesh unavailable, nothing was sent")
        return self.parse(body)

    def _accepted(self, nodes: int, request: Request, hung_up: list[bool]) -> None:
        self._gateway.metrics.published.inc()
        if not hung_up:
            _finish(request, 200, {"E": None, "r": {"s": nodes, "f": 0}})

    def _refused(self, failure: Failure, request: Request, hung_up: list[bool]) -> None:
        if failure.check(MeshUnavailable):
            error = ApiError(503, 104, "mesh unavailable, nothing was sent")
        else:
            log.failure("publish failed", failure)
            error = ApiError(500, 100, "internal error")
        self._gateway.metrics.publish_errors.labels(str(error.code)).inc()
        if not hung_up:
            _finish(request, error.status, _error_body(error))


def parse_kick(body: bytes) -> PublishRequest:
    """``{"uid": ...}``: end that user's login on every node (a control message)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise _invalid("body is not JSON") from None
    uid = normalize_uid(message.get("uid")) if isinstance(message, dict) else None
    if uid is None:
        raise _invalid('"uid" must be a positive integer or [A-Za-z0-9_-]{1,64}')
    return PublishRequest(CONTROL_CHANNEL, Publication(json.dumps({"kick": uid}).encode()))


class KickResource(PublishResource):
    """``POST /v1/mesh/kick {"uid": 1001}``: every node ends that user's private
    subscriptions and login; ``s`` in the answer is the number of nodes reached."""

    parse = staticmethod(parse_kick)


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self._gateway = gateway

    def render_GET(self, request: Request) -> bytes:
        mesh = self._gateway.mesh
        healthy = bool(mesh.available and mesh.receiving) and not self._gateway.draining
        body = {
            "status": "ok" if healthy else "draining" if self._gateway.draining else "unavailable",
            "mesh": "up" if healthy else "down",
            "publishing": bool(mesh.available),
            "receiving": bool(mesh.receiving),
            "connections": len(self._gateway.sessions),
        }
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
    root.putChild(b"healthz", HealthResource(gateway))
    root.putChild(b"metrics", MetricsResource(gateway))
    return root
