"""One client connection's state and op handling, with no WebSocket in it.

Ops are answered strictly in the order they arrived: a subscribe sent right after an auth
waits for the auth's answer, and two auths on one connection never interleave. The queue of
ops waiting behind a slow one is bounded; past the bound an op is refused at once with code 8.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import (
    Deferred,
    FirstError,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.publication import MeshOutcomeUnknown, MeshUnavailable
from exchange_stream.core.ratelimit import TokenBucket
from exchange_stream.core.wire import (
    CloseCode,
    ErrorCode,
    OpError,
    Request,
    encode_error,
    encode_notice,
    encode_pong,
    encode_position,
    encode_result,
    parse_request,
    request_id_of,
)
from exchange_stream.interfaces import IAuthenticator, IClientConnection
from exchange_stream.services.auth import AuthFailed, AuthUnavailable
from exchange_stream.services.node import Node, Start


class Session:
    log = Logger()
    max_pending_ops = 32
    # One per connection: slots keep an idle connection's memory down (bench/idle.py).
    __slots__ = (
        "_abuse_limit",
        "_authenticator",
        "_bucket",
        "_clock",
        "_closed",
        "_connection",
        "_expiry",
        "_kicked_meanwhile",
        "_max_subscriptions",
        "_node",
        "_pending",
        "_prefix",
        "_queue",
        "_refused_in_a_row",
        "_streams",
        "subscriptions",
        "uid",
    )

    def __init__(
        self,
        connection: IClientConnection,
        node: Node,
        authenticator: IAuthenticator,
        config: GatewayConfig,
        clock: IReactorTime,
    ) -> None:
        self._connection = connection
        self._node = node
        self._authenticator = authenticator
        self._prefix = config.prefix
        self._streams = config.streams
        self._max_subscriptions = config.max_subscriptions
        self._clock = clock
        self.uid: str | None = None
        # Client-side name → internal channel, in subscription order (for "list").
        self.subscriptions: dict[str, str] = {}
        self._queue: Deferred = succeed(None)
        self._pending = 0
        self._closed = False
        self._bucket = TokenBucket(config.op_rate, config.op_burst, clock.seconds())
        self._refused_in_a_row = 0
        self._abuse_limit = 2 * config.op_burst
        self._expiry: IDelayedCall | None = None
        # Per auth in flight, the uids kicked since it began; None while none is (most of a
        # connection's life: no list kept per idle connection).
        self._kicked_meanwhile: list[set[str]] | None = None

    def handle_frame(self, text: bytes) -> None:
        """Handle one text frame from the client.

        Over the op rate, or with too many ops waiting behind a slow one, an op is refused at
        once with code 8 (its answer comes before those of the ops still waiting). A client
        that goes on sending twice its burst of refused ops in a row is closed with 1008.
        """
        if self._closed:
            return
        if self._pending >= self.max_pending_ops or not self._bucket.take(self._clock.seconds()):
            self._refused_in_a_row += 1
            if self._refused_in_a_row > self._abuse_limit:
                self._connection.close(CloseCode.POLICY_VIOLATION, "rate limit")
            else:
                refusal = OpError(ErrorCode.RATE_LIMITED, request_id_of(text))
                self._connection.send_reply(encode_error(refusal))
            return
        self._refused_in_a_row = 0
        self._pending += 1
        self._queue.addCallback(self._process, text)

    def end(self) -> None:
        """The connection is gone: give back every subscription."""
        self._expire_at(None)
        self._closed = True
        self.subscriptions.clear()
        self._node.drop(self._connection)

    def _process(self, _: object, text: bytes) -> Deferred | None:
        if self._closed:  # queued behind a slow op, and the client left meanwhile
            self._pending -= 1
            return None
        # maybeDeferred waits for the Deferred that _answer may return; Twisted's overloads
        # cannot say so for a function that returns either a Deferred or a value.
        answered = cast("Deferred[bytes | None]", maybeDeferred(self._answer, text))
        answered.addErrback(self._internal_error)
        answered.addCallback(self._reply)
        return answered

    def _reply(self, reply: bytes | None) -> None:
        self._pending -= 1
        if reply is not None:
            self._send(reply)

    def _send(self, reply: bytes) -> None:
        if not self._closed:
            self._connection.send_reply(reply)

    def _internal_error(self, failure) -> None:
        self.log.failure("unexpected error while handling an op", failure)
        if not self._closed:
            self._connection.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _answer(self, text: bytes) -> Deferred[bytes | None] | bytes | None:
        try:
            request = parse_request(text)
            handler = getattr(self, f"_op_{request.op}")
            answer = handler(request)
        except OpError as error:
            return encode_error(error)
        if isinstance(answer, Deferred):
            return answer.addErrback(_encode_op_error)
        return answer

    @inlineCallbacks
    def _op_auth(self, request: Request):
        kicked: set[str] = set()
        if self._kicked_meanwhile is None:
            self._kicked_meanwhile = []
        self._kicked_meanwhile.append(kicked)
        try:
            identity = yield self._authenticator.authenticate(request.token or "")
        except AuthFailed:
            raise OpError(ErrorCode.AUTH_FAILED, request.id) from None
        except AuthUnavailable:
            raise OpError(ErrorCode.AUTH_UNAVAILABLE, request.id) from None
        finally:
            self._kicked_meanwhile.remove(kicked)
            if not self._kicked_meanwhile:
                self._kicked_meanwhile = None
        if self._closed:
            return None
        if identity.uid in kicked:
            # The user was kicked while the back end was answering: this login began before
            # the kick, so it does not take (the kicked user's events must not reach it).
            raise OpError(ErrorCode.AUTH_FAILED, request.id)
        if identity.uid != self.uid:
            self._drop_private_subscriptions()
        self.uid = identity.uid
        self._expire_at(identity.expires)
        return encode_result(request.id)

    def _expire_at(self, expires: float | None) -> None:
        """(Re)schedule the end of the login; a new auth in band replaces the old one."""
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        if expires is not None:
            delay = max(0.0, expires - self._clock.seconds())
            self._expiry = self._clock.callLater(delay, self.log_out, "auth_expired")

    def kick(self, uid: str) -> None:
        """``uid`` is kicked: log it out here, and let no auth in flight log it in."""
        for kicked in self._kicked_meanwhile or ():
            kicked.add(uid)
        if self.uid == uid:
            self.log_out("kicked")

    def log_out(self, why: str) -> None:
        """End the login (it expired, or the user was kicked): private subscriptions end
        and the client is told which, with a notice ``{"event":"notice","data":{...}}``."""
        if self._closed or self.uid is None:
            return
        dropped = self._drop_private_subscriptions()
        self.uid = None
        self._expire_at(None)
        self._send(encode_notice({"type": why, "channels": dropped}))

    def _op_subscribe(self, request: Request) -> Deferred:
        self._require_auth(request)
        new = [name for name in request.channels if name.name not in self.subscriptions]
        if len(self.subscriptions) + len(new) > self._max_subscriptions:
            raise OpError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, request.id)
        internals = [name.internal(self._prefix, self.uid) for name in new]
        starts = []
        for name, internal in zip(new, internals, strict=True):
            self.subscriptions[name.name] = internal
            since = request.since.get(name.name)
            positioned = self._streams.is_stream(internal) and (
                request.recover or since is not None
            )
            starts.append(self._node.subscribe(self._connection, internal, positioned, since))
        in_effect = gatherResults(starts, consumeErrors=True) if starts else succeed([])

        def answer_then_release(starts: list[Start]) -> None:
            # The answer first, then each channel's snapshot (or what a resume missed), then
            # its live messages.
            streams = {
                name.name: encode_position(start.position, start.recovered)
                for name, start in zip(new, starts, strict=True)
                if start.position is not None
            }
            self._send(encode_result(request.id, streams=streams))
            for internal, start in zip(internals, starts, strict=True):
                self._node.release(self._connection, internal, start)

        def unavailable(failure: Failure) -> None:
            failure.trap(MeshUnavailable, MeshOutcomeUnknown)  # positions could not be read
            for name, internal in zip(new, internals, strict=True):
                if self.subscriptions.get(name.name) == internal:
                    del self.subscriptions[name.name]
                    self._node.unsubscribe(self._connection, internal)
            raise OpError(ErrorCode.STREAM_UNAVAILABLE, request.id)

        return in_effect.addCallbacks(answer_then_release, _first_error).addErrback(unavailable)

    def _op_unsubscribe(self, request: Request) -> bytes:
        self._require_auth(request)
        for name in request.channels:
            internal = self.subscriptions.pop(name.name, None)
            if internal is not None:
                self._node.unsubscribe(self._connection, internal)
        return encode_result(request.id)

    def _op_list(self, request: Request) -> bytes:
        return encode_result(request.id, list(self.subscriptions))

    def _op_ping(self, request: Request) -> bytes:
        return encode_pong(request.id, int(self._clock.seconds() * 1000))

    def _require_auth(self, request: Request) -> None:
        if self.uid is None and any(name.private for name in request.channels):
            raise OpError(ErrorCode.NOT_AUTH, request.id)

    def _drop_private_subscriptions(self) -> list[str]:
        """A new uid must not keep receiving the previous user's private channels."""
        dropped = []
        for name, internal in list(self.subscriptions.items()):
            if name.startswith("@"):
                del self.subscriptions[name]
                self._node.unsubscribe(self._connection, internal)
                dropped.append(name)
        return dropped


def _first_error(failure: Failure) -> Failure:
    """gatherResults wraps the first failure; the session decides on the failure itself."""
    if isinstance(failure.value, FirstError):
        return failure.value.subFailure
    return failure


def _encode_op_error(failure):
    failure.trap(OpError)
    return encode_error(failure.value)
