"""The client op codec: parsing requests and encoding replies (docs/protocol.md).

Pure functions: a text frame goes in, a :class:`Request` or an :class:`OpError` comes out;
replies and notices are encoded here so that every answer on the wire has one shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from exchange_stream.core.channels import ChannelName, InvalidChannel, parse_channel
from exchange_stream.core.encoding import encode
from exchange_stream.core.streams import Position

RequestId = str | int | None


class ErrorCode(IntEnum):
    """Error codes a client sees; code 1 ("Not Auth") is CONNMIX's, kept for its clients."""

    NOT_AUTH = 1
    INVALID_JSON = 2
    UNKNOWN_OP = 3
    INVALID_CHANNEL = 4
    AUTH_FAILED = 5
    AUTH_UNAVAILABLE = 6
    TOO_MANY_SUBSCRIPTIONS = 7
    RATE_LIMITED = 8
    STREAM_UNAVAILABLE = 9


ERROR_MESSAGES = {
    ErrorCode.NOT_AUTH: "Not Auth",
    ErrorCode.INVALID_JSON: "Invalid JSON",
    ErrorCode.UNKNOWN_OP: "Unknown op",
    ErrorCode.INVALID_CHANNEL: "Invalid channel",
    ErrorCode.AUTH_FAILED: "Auth failed",
    ErrorCode.AUTH_UNAVAILABLE: "Auth unavailable",
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: "Too many subscriptions",
    ErrorCode.RATE_LIMITED: "Rate limited",
    ErrorCode.STREAM_UNAVAILABLE: "Stream unavailable",
}


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses (docs/protocol.md has the table).

    Application codes follow Pusher's ranges: 4000-4099 do not reconnect, 4100-4199 reconnect
    with backoff, 4200-4299 reconnect now (after the delay the reason gives, if any).
    """

    UNSUPPORTED_DATA = 1003  # a binary frame from the client
    POLICY_VIOLATION = 1008  # ops kept coming far over the rate limit
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TOO_SLOW = 4100  # the client did not read fast enough; back off, then resubscribe
    RECONNECT = 4200  # the node is shutting down or restarting; reconnect (to another node)


MAX_OFFSET = 2**53 - 1  # an offset is a JSON number any client reads exactly

OPS = frozenset({"auth", "subscribe", "unsubscribe", "ping", "list"})


class OpError(Exception):
    """A request the gateway answers with ``{"code":N,"msg":...}``; the connection stays open."""

    def __init__(
        self,
        code: ErrorCode,
        request_id: RequestId = None,
        channel: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(code, request_id, channel)
        self.code = code
        self.request_id = request_id
        self.channel = channel
        self.hint = hint

    def with_id(self, request_id: RequestId) -> OpError:
        return OpError(self.code, request_id, self.channel, self.hint)


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed op. ``channels`` is set for subscribe/unsubscribe, ``token`` for auth;
    a subscribe may ask for positions (``recover``) or resume from them (``since``, by the
    channel names the client uses)."""

    op: str
    id: RequestId = None
    token: str | None = None
    channels: tuple[ChannelName, ...] = ()
    recover: bool = False
    since: Mapping[str, Position] = field(default_factory=dict)


def parse_request(text: str | bytes) -> Request:
    """Parse one text frame; raise :class:`OpError` with the documented code otherwise."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise OpError(ErrorCode.INVALID_JSON) from None
    if not isinstance(message, dict):
        raise OpError(ErrorCode.INVALID_JSON)
    request_id = message.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int)
    ):
        raise OpError(ErrorCode.INVALID_JSON)
    op = message.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise OpError(ErrorCode.UNKNOWN_OP, request_id)
    if op == "auth":
        token = message.get("token", "")
        if not isinstance(token, str):
            raise OpError(ErrorCode.INVALID_JSON, request_id)
        return Request(op, request_id, token=token)
    if op == "subscribe":
        channels = _parse_channels(message, request_id)
        recover = message.get("recover", False)
        if not isinstance(recover, bool):
            raise OpError(ErrorCode.INVALID_JSON, request_id)
        since = _parse_since(message.get("since", {}), request_id)
        return Request(op, request_id, channels=channels, recover=recover, since=since)
    if op == "unsubscribe":
        return Request(op, request_id, channels=_parse_channels(message, request_id))
    return Request(op, request_id)


def _parse_since(since: object, request_id: RequestId) -> dict[str, Position]:
    """``{"@order": {"epoch": "E", "offset": 17}, ...}``: where a client resumes."""
    if not isinstance(since, dict):
        raise OpError(ErrorCode.INVALID_JSON, request_id)
    positions = {}
    for name, position in since.items():
        epoch = position.get("epoch") if isinstance(position, dict) else None
        offset = position.get("offset") if isinstance(position, dict) else None
        if not isinstance(epoch, str) or len(epoch) > 64:
            raise OpError(ErrorCode.INVALID_JSON, request_id)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise OpError(ErrorCode.INVALID_JSON, request_id)
        if not 0 <= offset <= MAX_OFFSET:
            raise OpError(ErrorCode.INVALID_JSON, request_id)
        positions[name] = Position(epoch, offset)
    return positions


def request_id_of(text: str | bytes) -> RequestId:
    """The ``id`` of a frame that is refused unread (rate limit), so that its answer can
    still be matched; None when there is no valid one."""
    try:
        request_id = json.loads(text).get("id")
    except (ValueError, RecursionError, AttributeError):
        return None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    return request_id


def _parse_channels(message: dict, request_id: RequestId) -> tuple[ChannelName, ...]:
    """``channel`` or ``channels``, all validated before any is used (all or nothing)."""
    if "channel" in message and "channels" in message:
        raise OpError(ErrorCode.INVALID_JSON, request_id)
    if "channels" in message:
        names = message["channels"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise OpError(ErrorCode.INVALID_JSON, request_id)
        if not names:
            raise OpError(ErrorCode.INVALID_CHANNEL, request_id)
    elif "channel" not in message:
        raise OpError(ErrorCode.INVALID_CHANNEL, request_id)
    else:
        name = message["channel"]
        if not isinstance(name, str):
            raise OpError(ErrorCode.INVALID_JSON, request_id)
        names = [name]
    parsed: dict[str, ChannelName] = {}
    for name in names:
        try:
            parsed[name] = parse_channel(name)
        except InvalidChannel as invalid:
            raise OpError(ErrorCode.INVALID_CHANNEL, request_id, name, invalid.hint) from None
    return tuple(parsed.values())


def _with_id(reply: dict, request_id: RequestId) -> dict:
    if request_id is not None:
        reply["id"] = request_id
    return reply


def encode_result(
    request_id: RequestId = None, result: object = True, streams: dict | None = None
) -> bytes:
    """``{"result":true}``, or the list of channels for ``list``; a subscribe that asked for
    positions gets them in ``streams``: ``{"@order":{"epoch":"E","offset":17}}``."""
    reply: dict[str, object] = {"result": result}
    if streams:
        reply["streams"] = streams
    return encode(_with_id(reply, request_id))


def encode_position(position: Position, recovered: bool | None) -> dict[str, object]:
    """A stream's entry in a subscribe's ``streams``; ``recovered`` only for a resume."""
    entry: dict[str, object] = {"epoch": position.epoch, "offset": position.offset}
    if recovered is not None:
        entry["recovered"] = recovered
    return entry


def encode_error(error: OpError) -> bytes:
    """``{"code":N,"msg":"..."}``; an invalid channel is named so the client can tell which,
    with a ``hint`` when what was meant is clear."""
    reply: dict = {"code": int(error.code), "msg": ERROR_MESSAGES[error.code]}
    if error.channel is not None:
        reply["channel"] = error.channel
    if error.hint is not None:
        reply["hint"] = error.hint
    return encode(_with_id(reply, error.request_id))


def encode_pong(request_id: RequestId, now_ms: int) -> bytes:
    return encode(_with_id({"op": "pong", "ts": now_ms}, request_id))


def encode_notice(data: dict) -> bytes:
    """``{"event":"notice","data":{...}}``: what the gateway tells a client unasked (a login
    that ended, a node going away)."""
    return encode({"event": "notice", "data": data})
