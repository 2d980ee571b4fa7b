"""Writing to many WebSocket connections cheaply: one ``send`` per connection per reactor turn.

Twisted's ``transport.write`` always queues: it registers the socket for writability with
epoll and sends on the next reactor turn, after which it unregisters it again. When a node
writes one small frame to each of many connections per message, those two ``epoll_ctl`` calls
per connection are a large part of the cost (the broadcast benchmark's profile, in
bench/RESULTS.md). When the connection's queue is empty, the same bytes can go out with one
``send`` right away; what the kernel does not take is queued as before, so ordering and flow
control are unchanged.

:class:`TurnWriter` goes one step further: what a reactor turn writes to one connection (a burst
of fan-out frames from a Redis read, the answers to 500 pipelined ``/ws/v1`` requests, a reply
and the pushes that follow it) is gathered and leaves in one ``send`` when the turn ends.

TCP_NODELAY stays on (Autobahn's ``tcpNoDelay`` default): the batching is done here, once per
turn, so Nagle's algorithm could only add delay, holding a small frame back until the peer's
(possibly delayed) ACK for the one before.

``write_now`` asks :func:`~exchange_stream.adapters.upstream.tcp_send_queue_empty`, which
reads Twisted's private queue state; any other transport (TLS, a test's) takes
``transport.write``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.logger import Logger

from exchange_stream.adapters.compression import SharedFrame
from exchange_stream.adapters.upstream import tcp_send_queue_empty

log = Logger()


def write_now(transport, data: bytes) -> None:
    """``transport.write(data)``, sending at once when the transport's queue is empty."""
    if not tcp_send_queue_empty(transport):
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if isinstance(sent, BaseException):  # let the reactor's usual path report the loss
        transport.write(data)
    elif sent < len(data):
        transport.write(data[sent:])


def _write_chunks(transport, chunks: list[bytes]) -> None:
    if len(chunks) == 1:
        write_now(transport, chunks[0])
    elif tcp_send_queue_empty(transport):
        write_now(transport, b"".join(chunks))
    else:  # queued anyway: Twisted's buffer keeps the fan-out's shared frames, not a copy
        transport.writeSequence(chunks)


class TurnWriter:
    """Gathers the bytes written to each transport during a reactor turn; sends them at its end.

    The first write to any transport in a turn schedules one ``callLater(0)``, which runs after
    the reactor has handled every event of the current poll. Per connection, the cost is one
    list append per frame and one ``send`` per turn, instead of a ``send`` per frame.

    A connection's pending bytes go to its transport at once past ``hold_at`` bytes: the
    transport's flow control (which pauses the connection, and so the slow-client bound in
    ``websocket.py``) only sees bytes that reached it, so a big turn must not hide them.
    """

    hold_at = 64 * 1024

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._pending: dict[ITransport, list[bytes]] = {}
        self._sizes: dict[ITransport, int] = {}

    def write(self, transport: ITransport, data: bytes) -> None:
        pending = self._pending.get(transport)
        if pending is None:
            if not self._pending:
                self._clock.callLater(0, self.flush)
            self._pending[transport] = [data]
            self._sizes[transport] = len(data)
        else:
            pending.append(data)
            self._sizes[transport] += len(data)
        if self._sizes[transport] > self.hold_at:
            self.flush_one(transport)

    def flush(self) -> None:
        """Send what every transport has pending (the end of the turn)."""
        pending, self._pending, self._sizes = self._pending, {}, {}
        for transport, chunks in pending.items():
            try:
                if len(chunks) == 1:  # the usual case, one call less per delivery
                    write_now(transport, chunks[0])
                else:
                    _write_chunks(transport, chunks)
            except Exception:  # one broken transport must not cost the others their frames
                log.failure("writing to {transport} failed", transport=transport)

    def flush_one(self, transport: ITransport) -> None:
        """Send what ``transport`` has pending now: before a write that bypasses the turn,
        before the connection is closed (``loseConnection`` only waits for the transport's
        own buffer), or when a turn holds too much for it."""
        chunks = self._pending.pop(transport, None)
        self._sizes.pop(transport, None)
        if chunks:
            _write_chunks(transport, chunks)

    def discard(self, transport: ITransport) -> None:
        """Forget what ``transport`` has pending: it is being aborted."""
        self._pending.pop(transport, None)
        self._sizes.pop(transport, None)


class FastSendProtocol(WebSocketServerProtocol):
    """An Autobahn server protocol whose frames leave through the factory's ``turn_writer``.

    Autobahn's own path (``sendData``) does a ``transport.write`` per frame and formats a debug
    log line and updates traffic statistics on every send: a third of the cost of a delivery in
    the broadcast benchmark's profile. Every frame of an open connection (pushes, replies, the close
    frame) goes through the same turn writer, so frames keep their order. Before the
    connection opens (the handshake answer, which may be followed at once by a close) and for
    Autobahn's queued synchronous sends, Autobahn's path is used, after what the turn writer
    holds. A connection that negotiated permessage-deflate (``deflate_window`` set) is written
    the message's shared compressed frame (``compression.py``).

    Flow control: a subclass that registers as its transport's push producer is paused when
    the transport's buffer is full (64 KiB: the client reads slower than we write). From then
    on its frames wait here, in order, instead of piling up in the transport, and go out when
    the transport asks for more. Past ``factory.max_backlog`` bytes waiting, ``too_slow`` is
    called: the waiting frames can be dropped whole, which bytes already handed to the
    transport could not be (one of them may be half sent).
    """

    _held: deque[bytes] | None = None  # None: frames go out; a deque while paused
    _held_size = 0
    deflate_window: int | None = None  # compressed frames' window bits; None: not compressing

    def sendPreparedMessage(self, prepared: Any) -> None:
        """The fan-out hot path: a few checks and a list append per subscriber. ``prepared``
        is a :class:`~exchange_stream.adapters.compression.SharedFrame`."""
        if self.state != self.STATE_OPEN:
            return
        window = self.deflate_window
        frame = prepared.payloadHybi if window is None else prepared.deflated(window)
        if self.send_queue:
            self.sendData(frame)  # queued behind Autobahn's synchronous sends
        elif self._held is None:
            self.factory.turn_writer.write(self.transport, frame)
        else:
            self.hold(frame)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if self.state == self.STATE_OPEN and not (sync or chopsize or self.send_queue):
            if self._held is None:
                self.factory.turn_writer.write(self.transport, data)
            else:
                self.hold(data)
            return
        self.factory.turn_writer.flush_one(self.transport)
        super().sendData(data, sync, chopsize)

    def dropConnection(self, abort: bool = False) -> None:
        if abort:  # nothing more goes out, as with Twisted's own buffer
            self.factory.turn_writer.discard(self.transport)
        else:
            self.factory.turn_writer.flush_one(self.transport)
        super().dropConnection(abort)

    def send_text(self, payload: bytes) -> None:
        """``sendMessage`` for a text message, through the same fast path."""
        self.sendPreparedMessage(SharedFrame(payload))

    # -- IPushProducer, for a subclass that registers as its transport's producer --------

    def pauseProducing(self) -> None:
        if self._held is None:
            self._held = deque()

    def resumeProducing(self) -> None:
        """The transport's buffer is empty: hand it what waits, until it is full again."""
        held, self._held = self._held, None
        transport = self.transport
        if held and transport is not None:  # what the turn writer holds is older: first
            self.factory.turn_writer.flush_one(transport)
        while held and transport is not None:
            frame = held.popleft()
            self._held_size -= len(frame)
            transport.write(frame)
            if self.paused:  # that write filled the buffer again
                self._held = held
                return
        self._held_size = 0

    @property
    def paused(self) -> bool:
        """Whether frames wait here now (the transport's buffer is full)."""
        return self._held is not None

    def stopProducing(self) -> None:
        self.pauseProducing()

    def hold(self, frame: bytes) -> None:
        """Keep ``frame`` until the transport asks for more, within ``factory.max_backlog``."""
        assert self._held is not None
        self._held.append(frame)
        self._held_size += len(frame)
        if self._held_size > self.factory.max_backlog:
            self.too_slow()

    def drop_held(self) -> int:
        """Forget the frames waiting (they are never sent); how many bytes they were."""
        dropped, self._held_size = self._held_size, 0
        if self._held is not None:
            self._held.clear()
            self._held = None
        return dropped

    def too_slow(self) -> None:
        """More than ``factory.max_backlog`` bytes wait: what to do is the subclass's policy."""
        raise NotImplementedError
