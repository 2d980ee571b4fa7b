"""The CONNMIX publish codec: requests and answers of the internal API, whatever carries them
(HTTP, the ``/ws/v1`` WebSocket).

CONNMIX's mesh API shapes: a request ``{"c": channel, "d": text}`` (``"t":"binary"`` for
base64 ``d``; ``"retain"``/``"snapshot"`` to keep the channel's state), an answer
``{"E":null,"r":{"s":nodes,"f":0}}`` or ``{"E":{"c":code,"m":message}}``. Nothing accepted is
dropped silently: a refusal says whether anything was sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from exchange_stream.core.channels import normalize_uid
from exchange_stream.core.control import CONTROL_CHANNEL, RESERVED_PREFIX, encode_kick
from exchange_stream.core.publication import Publication, Published
from exchange_stream.core.streams import StreamPolicy

MAX_BATCH = 1000
DEFAULT_STREAMS = StreamPolicy()
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


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
    key: str | None = None  # idempotency: a retry with the same key is not sent twice


def decode_body(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise invalid("body is not JSON") from None


def parse_publish(message: object, streams: StreamPolicy = DEFAULT_STREAMS) -> PublishRequest:
    """One publish request; raise :class:`ApiError` (400 / 101) when it is not one.

    A publication on a stream channel (``streams``) must be a JSON object: the gateway adds
    its offset to it for the clients that asked for positions, without re-encoding it."""
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
    key = message.get("k")
    if key is not None and not (isinstance(key, str) and _KEY.fullmatch(key)):
        raise invalid('"k" must be 1 to 128 characters: letters, digits and -_.:')
    if streams.is_stream(channel) and not _is_json_object(publication):
        raise invalid(f'"d" must be a JSON object on a stream channel ({channel})')
    if snapshot is not None and (retain or not isinstance(snapshot, str)):
        raise invalid('"snapshot" must be text, and not given with "retain"')
    if retain:
        return PublishRequest(channel, publication, publication, key)
    if snapshot is not None:
        return PublishRequest(channel, publication, Publication(snapshot.encode()), key)
    return PublishRequest(channel, publication, None, key)


def _is_json_object(publication: Publication) -> bool:
    if publication.binary or not publication.payload.lstrip().startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(publication.payload), dict)
    except (ValueError, RecursionError):
        return False


def parse_batch(
    message: object, parse: Callable[[object], PublishRequest] = parse_publish
) -> list[PublishRequest]:
    """A JSON array of publishes (each read by ``parse``), all checked before any is sent."""
    if not isinstance(message, list) or not message or len(message) > MAX_BATCH:
        raise invalid(f"a batch is a JSON array of 1 to {MAX_BATCH} publishes")
    requests = []
    for index, item in enumerate(message):
        try:
            requests.append(parse(item))
        except ApiError as error:
            raise invalid(f"publish {index}: {error.message}") from None
    return requests


def parse_kick(message: object) -> PublishRequest:
    """``{"uid": ...}``: end that user's login on every node (a control message)."""
    uid = normalize_uid(message.get("uid")) if isinstance(message, dict) else None
    if uid is None:
        raise invalid('"uid" must be a positive integer or [A-Za-z0-9_-]{1,64}')
    return PublishRequest(CONTROL_CHANNEL, Publication(encode_kick(uid)))


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


def combined(answers: list[tuple[int, dict]]) -> tuple[int, dict]:
    """A batch's answer from its items': 200 and every ``r``, or the status and ``E`` of the
    first item that failed beside every item's answer."""
    failed = [(status, answer) for status, answer in answers if status != 200]
    items = [answer["r"] if status == 200 else answer for status, answer in answers]
    if not failed:
        return 200, {"E": None, "r": items}
    status, first = failed[0]
    return status, {"E": first["E"], "r": items}


def sent(published: Published) -> tuple[int, dict]:
    """An accepted publish: ``s`` is the number of nodes that had subscribers; on a stream
    channel ``offset`` and ``epoch`` are the publication's position."""
    result: dict[str, object] = {"s": published.nodes, "f": 0}
    if published.offset is not None:
        result["offset"] = published.offset
        result["epoch"] = published.epoch
    return 200, {"E": None, "r": result}


def too_large(limit: int) -> ApiError:
    return ApiError(413, 103, f"body larger than {limit} bytes")


def draining() -> ApiError:
    return ApiError(503, 104, "node shutting down, nothing was sent; publish elsewhere")


def mesh_unavailable() -> ApiError:
    return ApiError(503, 104, "mesh unavailable, nothing was sent")


def outcome_unknown() -> ApiError:
    return ApiError(
        504,
        105,
        'no answer from the mesh in time: it may have been published; retry with the same "k"',
    )


def internal_error() -> ApiError:
    return ApiError(500, 100, "internal error")
