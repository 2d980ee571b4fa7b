"""Publishing for back ends, whatever carries the request (HTTP, the WebSocket API).

CONNMIX's mesh API shapes: a request ``{"c": channel, "d": text}`` (``"t":"binary"`` for
base64 ``d``; ``"retain"``/``"snapshot"`` to keep the channel's state), an answer
``{"E":null,"r":{"s":nodes,"f":0}}`` or ``{"E":{"c":code,"m":message}}``. Nothing accepted is
dropped silently: a refusal says whether anything was sent.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_stream.channels import normalize_uid
from exchange_stream.control import CONTROL_CHANNEL, RESERVED_PREFIX
from exchange_stream.mesh import MeshUnavailable, Publication

if TYPE_CHECKING:
    from exchange_stream.gateway import Gateway

log = Logger()

MAX_BATCH = 1000


class ApiError(Exception):
    """A refused request: HTTP status, CONNMIX error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def answer(self) -> dict:
        return {"E": {"c": self.code, "m": self.message}}


def invalid(message: str) -> ApiError:
    return ApiError(400, 101, message)


@dataclass(frozen=True, slots=True)
class PublishRequest:
    channel: str
    publication: Publication
    snapshot: Publication | None = None


def decode_body(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise invalid("body is not JSON") from None


def parse_publish(message: object) -> PublishRequest:
    """One publish request; raise :class:`ApiError` (400 / 101) when it is not one."""
    if not isinstance(message, dict):
        raise invalid("a publish must be a JSON object")
    channel = message.get("c")
    if not isinstance(channel, str) or not channel or len(channel) > 1024:
        raise invalid('"c" must be a non-empty channel name')
    if not channel.isprintable() or " " in channel:
        raise invalid('"c" must not contain spaces or control characters')
    if channel.startswith(RESERVED_PREFIX):
        raise invalid(f'channels starting with "{RESERVED_PREFIX}" are the gateway\'s own')
    publication = _parse_data(message.get("d"), message.get("t", "text"))
    retain = message.get("retain", False)
    snapshot = message.get("snapshot")
    if not isinstance(retain, bool):
        raise invalid('"retain" must be true or false')
    if snapshot is not None and (retain or not isinstance(snapshot, str)):
        raise invalid('"snapshot" must be text, and not given with "retain"')
    if retain:
        return PublishRequest(channel, publication, publication)
    if snapshot is not None:
        return PublishRequest(channel, publication, Publication(snapshot.encode()))
    return PublishRequest(channel, publication)


def parse_batch(message: object) -> list[PublishRequest]:
    """A JSON array of publishes, all checked before any is sent."""
    if not isinstance(message, list) or not message or len(message) > MAX_BATCH:
        raise invalid(f"a batch is a JSON array of 1 to {MAX_BATCH} publishes")
    requests = []
    for index, item in enumerate(message):
        try:
            requests.append(parse_publish(item))
        except ApiError as error:
            raise invalid(f"publish {index}: {error.message}") from None
    return requests


def parse_kick(message: object) -> PublishRequest:
    """``{"uid": ...}``: end that user's login on every node (a control message)."""
    uid = normalize_uid(message.get("uid")) if isinstance(message, dict) else None
    if uid is None:
        raise invalid('"uid" must be a positive integer or [A-Za-z0-9_-]{1,64}')
    return PublishRequest(CONTROL_CHANNEL, Publication(json.dumps({"kick": uid}).encode()))


def _parse_data(data: object, kind: object) -> Publication:
    if not isinstance(data, str):
        raise invalid('"d" must be a string')
    if kind == "text":
        return Publication(data.encode())
    if kind == "binary":
        try:
            return Publication(base64.b64decode(data, validate=True), binary=True)
        except (binascii.Error, ValueError):
            raise invalid('"d" must be base64 when "t" is "binary"') from None
    raise invalid('"t" must be "text" or "binary"')


class Publisher:
    """Sends checked requests into the gateway's node and answers in CONNMIX's shape."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def refusal(self) -> ApiError | None:
        """Why nothing can be published now, if so (checked before reading a request)."""
        if self._gateway.draining:
            return ApiError(503, 104, "node shutting down, nothing was sent; publish elsewhere")
        if not self._gateway.mesh.available:
            return ApiError(503, 104, "mesh unavailable, nothing was sent")
        return None

    def publish_all(self, requests: list[PublishRequest], batch: bool) -> Deferred:
        """Publish one request, or a batch in order; fires with ``(status, answer)`` and never
        fails. A batch answers 200 with every item's ``r``, or the status and ``E`` of its
        first failed item beside every item's answer (so the back end retries only those).

        One callback per publish, and one per batch: at tens of thousands of publishes a
        second, each further Deferred link per item is a measurable share of the cost."""
        refusal = self.refusal()
        if refusal is not None:  # one refused request, counted once, whatever its size
            self.count_error(refusal)
            answer = (refusal.status, refusal.answer())
            return succeed(_combined([answer] * len(requests)) if batch else answer)
        node = self._gateway.node
        outcomes = [node.publish(r.channel, r.publication, r.snapshot) for r in requests]
        if not batch:
            return outcomes[0].addCallbacks(self._accepted, self._refused)
        return DeferredList(outcomes, consumeErrors=True).addCallback(self._batch_answer)

    def count_error(self, error: ApiError) -> None:
        self._gateway.metrics.publish_errors.labels(str(error.code)).inc()

    def _accepted(self, nodes: int) -> tuple[int, dict]:
        self._gateway.metrics.published.inc()
        return _sent(nodes)

    def _refused(self, failure: Failure) -> tuple[int, dict]:
        if failure.check(ApiError):
            error = failure.value
        elif failure.check(MeshUnavailable):
            error = ApiError(503, 104, "mesh unavailable, nothing was sent")
        else:
            log.failure("publish failed", failure)
            error = ApiError(500, 100, "internal error")
        self.count_error(error)
        return error.status, error.answer()

    def _batch_answer(self, outcomes: list[tuple[bool, object]]) -> tuple[int, dict]:
        answers = [_sent(value) if ok else self._refused(value) for ok, value in outcomes]
        published = sum(ok for ok, _ in outcomes)
        if published:
            self._gateway.metrics.published.inc(published)
        return _combined(answers)


def _combined(answers: list[tuple[int, dict]]) -> tuple[int, dict]:
    """A batch's answer from its items': 200 and every ``r``, or the status and ``E`` of the
    first item that failed beside every item's answer."""
    failed = [(status, answer) for status, answer in answers if status != 200]
    items = [answer["r"] if status == 200 else answer for status, answer in answers]
    if not failed:
        return 200, {"E": None, "r": items}
    status, first = failed[0]
    return status, {"E": first["E"], "r": items}


def _sent(nodes: object) -> tuple[int, dict]:
    return 200, {"E": None, "r": {"s": nodes, "f": 0}}
