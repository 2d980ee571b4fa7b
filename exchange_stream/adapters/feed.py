"""Inputs of the market engine: the matching engine's events over TCP, UDP or HTTP polling.

A malformed line, datagram or answer is counted, logged now and then, and skipped: it never
stops the feed, and since every event is checked whole before it is used, never corrupts a
book.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from hmac import compare_digest

from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_stream.core.encoding import encode
from exchange_stream.core.market.decimals import SymbolLimits
from exchange_stream.core.market.events import Event, MalformedEvent, parse_event
from exchange_stream.core.market.spellings import Spellings
from exchange_stream.services.bodies import bounded_body
from exchange_stream.services.periodic import PeriodicService

log = Logger()


class FeedInput:
    """Parses raw events for an engine (its numbers within ``limits``) and counts the bad
    ones, by reason, in ``refused`` (the engine's counter, so that one counter has them all).
    """

    log_every = 1000  # the first bad event is logged, then one in this many

    def __init__(
        self,
        handle: Callable[[Event], None],
        limits: SymbolLimits | None = None,
        refused: Counter[str] | None = None,
    ) -> None:
        self._handle = handle
        self._limits = limits or SymbolLimits()
        self._spellings = Spellings()  # each symbol's book levels repeat: read once
        self.refused: Counter[str] = Counter() if refused is None else refused
        self.received = 0
        self.malformed = 0

    def raw(self, data: bytes | str, source: str) -> None:
        event = self.parse(data, source)
        if event is not None:
            self.event(event)

    def parse(self, data: bytes | str, source: str) -> Event | None:
        """The event in ``data``, or None (counted) when it is not a valid one. A parser
        that fails otherwise (a bug) is logged with its traceback and counted as ``failed``,
        as the engine's failures are: the feed's connection and its buffer go on."""
        try:
            return parse_event(data, self._limits, self._spellings)
        except MalformedEvent as error:
            self.received += 1
            self._bad(error, source)
        except Exception:
            self.received += 1
            self.refused["failed"] += 1
            log.failure("market feed: the parser failed on {data!r}", data=data[:200])
        return None

    def event(self, event: Event) -> None:
        """An event that needs no parsing (the simulator's), counted like the others. An
        engine that fails on one (a bug: valid events are applied whole) is logged with its
        traceback and counted as ``failed``; the feed goes on with the next."""
        self.received += 1
        try:
            self._handle(event)
        except Exception:
            self.refused["failed"] += 1
            log.failure("market feed: the engine failed on {event!r}", event=event)

    def unauthorised(self, source: str, why: str) -> None:
        """A connection closed for its AUTH line, or a datagram without the secret: counted;
        the first, then one in ``log_every``, logged (a scanner knocking on the port must not
        flood the log)."""
        self.refused["unauthorised"] += 1
        count = self.refused["unauthorised"]
        if count % self.log_every == 1:
            log.warn(
                "market feed: {source} {why} ({count} such so far)",
                source=source,
                why=why,
                count=count,
            )

    def _bad(self, error: Exception, source: str) -> None:
        self.malformed += 1
        self.refused[error.reason if isinstance(error, MalformedEvent) else "malformed"] += 1
        if self.malformed % self.log_every == 1:
            log.warn(
                "market feed: refused an event from {source} ({reason}: {error}); {count} so far",
                source=source,
                reason=error.reason if isinstance(error, MalformedEvent) else "malformed",
                error=error,
                count=self.malformed,
            )


class _LineFeed(Protocol):
    """JSON lines. Not Twisted's LineOnlyReceiver: past its length limit it drops the rest of
    the chunk (or the connection); here an overlong line is skipped alone, up to its end."""

    MAX_LENGTH = 4 * 1024 * 1024  # a full book of thousands of levels fits
    AUTH_WITHIN = 10.0  # seconds for a connection's AUTH line, when a secret is asked

    def connectionMade(self) -> None:
        self._buffer = b""
        self._skipping = False  # inside an overlong line: drop until its newline
        self._admitted = self.factory.secret is None  # else: once its AUTH line is right
        self._auth_line_length = len(b"AUTH \r") + len(self.factory.secret or b"")
        self._auth_call = None
        if not self._admitted:
            clock = self.factory.clock
            self._auth_call = clock.callLater(self.AUTH_WITHIN, self._no_auth_line)
        assert self.transport is not None  # makeConnection sets it before connectionMade
        self._source = f"tcp {self.transport.getPeer()}"
        if self._admitted:
            self._log_connected()

    def _log_connected(self) -> None:
        """Once admitted: the connections refused for their AUTH line are counted instead."""
        log.info("market feed: matching engine connected from {source}", source=self._source)

    def dataReceived(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        if not self._admitted and not lines and len(self._buffer) > self._auth_line_length:
            self._authenticate(self._buffer)  # longer than the AUTH line can be: refused
            return
        feed = self.factory.feed
        for line in lines:
            if not self._admitted:
                if not self._authenticate(line):
                    return
            elif self._skipping:
                self._skipping = False  # the tail of the overlong line
            elif len(line) > self.MAX_LENGTH:
                feed._bad(MalformedEvent("line too long"), self._source)
            elif line.strip():
                feed.raw(line, self._source)
        if len(self._buffer) > self.MAX_LENGTH and not self._skipping:
            feed._bad(MalformedEvent("line too long"), self._source)
            self._skipping = True
        if self._skipping:
            self._buffer = b""

    def _authenticate(self, line: bytes) -> bool:
        """The first line must be ``AUTH <secret>``; anything else closes the connection."""
        secret = self.factory.secret
        if compare_digest(line.rstrip(b"\r"), b"AUTH " + secret):
            self._admitted = True
            self._cancel_auth_call()
            self._log_connected()
            return True
        self.factory.feed.unauthorised(self._source, "sent no valid AUTH line; closed")
        assert self.transport is not None
        self.transport.loseConnection()
        self._buffer = b""
        return False

    def _no_auth_line(self) -> None:
        self._auth_call = None
        self.factory.feed.unauthorised(self._source, "sent no AUTH line in time; closed")
        assert self.transport is not None
        self.transport.loseConnection()

    def _cancel_auth_call(self) -> None:
        if self._auth_call is not None and self._auth_call.active():
            self._auth_call.cancel()
        self._auth_call = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_auth_call()
        if self._admitted:
            log.info("market feed: {source} disconnected", source=self._source)


class LineFeedFactory(Factory):
    """``--feed tcp:7001``: the matching engine connects and writes JSON lines."""

    protocol = _LineFeed
    noisy = False

    def __init__(self, feed: FeedInput, secret: str | None = None, clock=None) -> None:
        self.feed = feed
        self.secret = None if secret is None else secret.encode()
        if clock is None:
            from twisted.internet import reactor as installed

            clock = installed
        self.clock = clock


class DatagramFeed(DatagramProtocol):
    """``--feed-udp 7002``: one JSON event per datagram; with a secret, each datagram starts
    with it and a newline."""

    def __init__(self, feed: FeedInput, secret: str | None = None) -> None:
        self.feed = feed
        self._secret = None if secret is None else secret.encode()

    def datagramReceived(self, datagram: bytes, address) -> None:
        source = f"udp {address[0]}:{address[1]}"
        if self._secret is not None:
            given, _, event = datagram.partition(b"\n")
            if not compare_digest(given.rstrip(b"\r"), self._secret):  # "\r\n" too, as on TCP
                self.feed.unauthorised(source, "sent a datagram without the secret; dropped")
                return
            datagram = event
        self.feed.raw(datagram, source)


class BookPoller(PeriodicService):
    """``--book-url``: GET book snapshots at an interval.

    The URL answers one book event (``{"symbol":..,"bids":..,"asks":..,"ts":..}``, ``"type"``
    optional) or a JSON array of them. A failed or malformed answer, or one over
    ``MAX_ANSWER`` bytes (not read further), is counted and skipped.
    """

    start_now = True
    MAX_ANSWER = 16 * 1024 * 1024  # books of 300 symbols at 100 levels a side: 1.3 MB

    def __init__(self, url: str, feed: FeedInput, http, clock, interval: float = 0.1) -> None:
        super().__init__(clock)
        self.url = url
        self._feed = feed
        self._http = http
        self._interval = interval
        self.failures = 0

    def periodic(self) -> list[tuple[float, Callable[[], object]]]:
        return [(self._interval, self.poll)]

    @inlineCallbacks
    def poll(self):
        try:
            response = yield self._http.get(self.url)
            body = yield bounded_body(response, self.MAX_ANSWER, MalformedEvent)
            if response.code != 200:
                raise MalformedEvent(f"HTTP {response.code}")
            answer = json.loads(body)
        except Exception as error:  # a poll that fails is skipped; the next one may work
            self.failures += 1
            self._feed._bad(error, self.url)
            return
        for book in answer if isinstance(answer, list) else [answer]:
            if isinstance(book, dict):
                book = {"type": "book", **book}
            self._feed.raw(encode(book), self.url)
