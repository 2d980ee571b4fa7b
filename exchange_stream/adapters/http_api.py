"""The internal API port's HTTP/1.1: a lean protocol on llhttp (``httptools``) for the hot
requests, twisted.web for everything else.

One publish per request is what CONNMIX's API and every back end written for it do, and
twisted.web's request machinery (header objects, ``Request``, resource traversal, response
headers) costs most of such a request. A connection whose first request line is one of the
API's own requests (``POST /v1/mesh/publish``, ``POST /v1/mesh/kick``, ``GET /healthz``,
``GET /metrics``) is parsed here instead: llhttp in C, a few callbacks, keep-alive and
pipelining (answers in request order), answers leaving through the turn writer (many in one
``send``). Any other first request (``/ws/v1``'s upgrade, a ``HEAD``, a path of its own) hands
the connection to the twisted.web site, replaying what was read; a later request on a lean
connection must be one of the four (else 404).

What twisted.web's site does for the API port is done here too: the connection is counted
from the moment it is accepted (``Admission``; a refused one is handed to the site, which
answers the refusal), every request must arrive whole within ``deadline`` seconds of its first
byte, and a body over ``max_body`` is refused with 413 from its ``Content-Length`` before it is
read, or as it passes the limit. What a request means is ``services.api.MeshApi``'s, as for
the site's resources.
"""

from __future__ import annotations

import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from exchange_stream.adapters.fastwrite import TurnWriter, write_now
from exchange_stream.adapters.web import DeadlineChannel, QuietSite, peer_host
from exchange_stream.core.encoding import encode
from exchange_stream.core.mesh_api import ApiError
from exchange_stream.services.api import JSON, Answer, MeshApi
from exchange_stream.services.connections import Admission

ROUTES = {
    (b"POST", b"/v1/mesh/publish"): "publish",
    (b"POST", b"/v1/mesh/kick"): "kick",
    (b"GET", b"/healthz"): "health",
    (b"GET", b"/metrics"): "metrics",
}
LONGEST_FIRST_LINE = 8192  # a request line longer than this goes to twisted.web
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class LeanApiFactory(Factory):
    """The API port's connections: lean while they ask for the API's own requests, else the
    ``site``'s (twisted.web) with what they sent."""

    def __init__(
        self,
        api: MeshApi,
        site: QuietSite,
        turn_writer: TurnWriter,
        clock: IReactorTime,
        deadline: float,
        admission: Admission,
    ) -> None:
        self.api = api
        self.site = site
        self.turn_writer = turn_writer
        self.clock = clock
        self.deadline = deadline
        self.admission = admission
        self._date = (0, b"")

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = LeanApiProtocol()
        protocol.factory = self
        return protocol

    def date_header(self) -> bytes:
        """``Date: ...`` (RFC 9110 asks an origin server with a clock for it), formatted
        once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, b"Date: %s\r\n" % formatdate(now, usegmt=True).encode())
        return self._date[1]


class _Request:
    """One request being read, and then its answer (None until it is ready)."""

    __slots__ = ("answer", "authorization", "body", "close", "expect", "too_big", "url")

    def __init__(self) -> None:
        self.url = b""
        self.authorization: bytes | None = None
        self.body: list[bytes] = []
        self.too_big = False
        self.expect = False
        self.close = False
        self.answer: bytes | None = None


class LeanApiProtocol(Protocol):
    factory: LeanApiFactory

    _parser: httptools.HttpRequestParser | None = None
    _ticket: str | None = None
    _deadline_call: IDelayedCall | None = None
    _closing = False

    def connectionMade(self) -> None:
        self._head = b""  # what arrived before the first request line was whole
        self._reading: _Request | None = None
        self._answers: deque[_Request] = deque()  # in request order, for pipelining
        self._received = 0
        assert self.transport is not None
        admitted = self.factory.admission.arrive(peer_host(self.transport.getPeer()))
        if isinstance(admitted, tuple):  # the site answers the refusal to every request
            self._hand_over(refusal=admitted)
        else:
            self._ticket = admitted

    def dataReceived(self, data: bytes) -> None:
        if self._deadline_call is None and not self._closing:
            self._deadline_call = self.factory.clock.callLater(
                self.factory.deadline, self._too_slow
            )
        if self._parser is None:
            self._head += data
            end = self._head.find(b"\r\n")
            if end < 0:
                if len(self._head) > LONGEST_FIRST_LINE:
                    self._hand_over()
                return
            method, _, rest = self._head[:end].partition(b" ")
            if (method, rest.partition(b" ")[0]) not in ROUTES:
                self._hand_over()
                return
            self._parser = httptools.HttpRequestParser(self)
            data, self._head = self._head, b""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "open /ws/v1 on a connection of its own")
        except httptools.HttpParserError as error:
            if "Content-Length overflow" in str(error):  # more than 2^64: too big, as twisted.web
                self._reading = self._reading or _Request()
                self._refuse_body()
            else:
                self._fail(400, "malformed HTTP request")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        if self._ticket is not None:
            self.factory.admission.leave(self._ticket)
            self._ticket = None

    # -- llhttp's callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reading = _Request()
        self._received = 0

    def on_url(self, url: bytes) -> None:
        assert self._reading is not None
        self._reading.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._reading
        assert request is not None
        name = name.lower()
        if name == b"authorization":
            request.authorization = value
        elif name == b"content-length":
            request.too_big = not value.isdigit() or int(value) > self.factory.api.max_body
        elif name == b"expect":
            request.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        request = self._reading
        assert request is not None and self._parser is not None
        if request.too_big:
            self._refuse_body()
        elif request.expect and not self._answers:
            write_now(self.transport, CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        request = self._reading
        assert request is not None
        if request.too_big:
            return
        self._received += len(chunk)
        if self._received > self.factory.api.max_body:
            request.too_big = True
            self._refuse_body()
            return
        request.body.append(chunk)

    def on_message_complete(self) -> None:
        request, self._reading = self._reading, None
        assert request is not None and self._parser is not None
        self._cancel_deadline()  # whole: the next request gets its own
        if request.too_big:
            return
        request.close = not self._parser.should_keep_alive()
        self._answers.append(request)
        method = self._parser.get_method()
        route = ROUTES.get((method, request.url))
        api = self.factory.api
        if route == "publish" or route == "kick":
            send = api.publish if route == "publish" else api.kick
            answered = send(request.authorization, b"".join(request.body))
            answered.addCallback(self._answered, request)
        elif route == "health":
            self._ready(request, api.health())
        elif route == "metrics":
            self._ready(request, api.metrics())
        else:
            self._ready(request, (404, b"text/plain", b"this connection serves the API\n"))

    # -- answers ------------------------------------------------------------------------

    def _answered(self, outcome: tuple[int, dict], request: _Request) -> None:
        status, body = outcome
        self._ready(request, (status, JSON, encode(body)))

    def _ready(self, request: _Request, answer: Answer) -> None:
        status, content_type, body = answer
        close = b"Connection: close\r\n" if request.close else b""
        request.answer = b"%s%sContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
            _STATUS_LINES[status], self.factory.date_header(), content_type, len(body), close,
            body,
        )  # fmt: skip
        answers = self._answers
        while answers and answers[0].answer is not None:
            done = answers.popleft()
            if self.transport is None or self._closing:
                continue
            assert done.answer is not None
            self.factory.turn_writer.write(self.transport, done.answer)
            if done.close:
                self._close()

    def _refuse_body(self) -> None:
        """413 before the body is read (from its Content-Length) or as it passes the limit:
        after the answers before it, then the connection is closed (the rest of the body is
        not read)."""
        limit = self.factory.api.max_body
        error = ApiError(413, 103, f"body larger than {limit} bytes")
        self.factory.api.count_refusal(error)
        request = self._reading
        assert request is not None
        request.close = True
        self._answers.append(request)
        self._ready(request, (413, JSON, encode(error.answer())))

    def _fail(self, status: int, why: str) -> None:
        request = _Request()
        request.close = True
        self._answers.append(request)
        self._ready(request, (status, b"text/plain", why.encode() + b"\n"))

    def _close(self) -> None:
        self._closing = True
        self._cancel_deadline()
        assert self.transport is not None
        self.factory.turn_writer.flush_one(self.transport)
        self.transport.loseConnection()

    def _too_slow(self) -> None:
        """The request did not arrive whole in time (slowloris): cut."""
        self._deadline_call = None
        self.factory.site.slow_requests += 1
        transport = self.transport
        assert transport is not None
        self.factory.turn_writer.discard(transport)
        transport.abortConnection()  # type: ignore[attr-defined]  # TCP and TLS have it

    def _cancel_deadline(self) -> None:
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None

    # -- to twisted.web -----------------------------------------------------------------

    def _hand_over(self, refusal: tuple[int, str] | None = None) -> None:
        """The site's HTTP channel takes the connection, with its ticket (or refusal) and
        what was read of it; this protocol hears no more of it."""
        self._cancel_deadline()
        transport = self.transport
        assert transport is not None
        channel = self.factory.site.buildProtocol(transport.getPeer())
        assert isinstance(channel, DeadlineChannel)
        channel.ticket, self._ticket = self._ticket, None  # counted already, not again
        channel.refusal, channel.counted = refusal, True
        # What the transport calls from now on (as Autobahn's resource does it the other way)
        if isinstance(transport, ProtocolWrapper):  # TLS
            transport.wrappedProtocol = channel
        else:
            transport.protocol = channel  # type: ignore[attr-defined]
        channel.makeConnection(transport)
        if self._head:
            head, self._head = self._head, b""
            channel.dataReceived(head)


_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}
