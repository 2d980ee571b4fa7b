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

from collections import deque
from http import HTTPStatus
from typing import Any

import httptools
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString

from exchange_stream.adapters.fastwrite import TurnWriter
from exchange_stream.adapters.web import DeadlineChannel, QuietSite, peer_host
from exchange_stream.core.encoding import encode
from exchange_stream.core.mesh_api import too_large
from exchange_stream.services.api import JSON, Answer, MeshApi
from exchange_stream.services.connections import Admission

log = Logger()

ROUTES = {
    (b"POST", b"/v1/mesh/publish"): "publish",
    (b"POST", b"/v1/mesh/kick"): "kick",
    (b"GET", b"/healthz"): "health",
    (b"GET", b"/metrics"): "metrics",
}
DEADLINE, IDLE = "deadline", "idle"  # what a connection's timer stands for
LONGEST_FIRST_LINE = 8192  # a request line longer than this goes to twisted.web
LARGEST_HEAD = 16 * 1024  # a request line and headers past this: 431 (twisted.web: a bare 400)
MOST_HEADERS = 100
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class LeanApiFactory(Factory):
    """The API port's connections: lean while they ask for the API's own requests, else the
    ``site``'s (twisted.web) with what they sent."""

    def __init__(self, api: MeshApi, site: QuietSite, turn_writer: TurnWriter) -> None:
        if site.deadline is None or site.admission is None or site.timeOut is None:
            raise ValueError("the lean API shares the site's deadline, admission and timeout")
        self.api = api
        self.site = site
        self.turn_writer = turn_writer
        # The site's, so that a connection is bound and counted alike whichever serves it.
        self.clock: IReactorTime = site.clock
        self.deadline: float = site.deadline
        self.admission: Admission = site.admission
        self.idle_timeout = float(site.timeOut)
        self._date = (0, b"")

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = LeanApiProtocol()
        protocol.factory = self
        return protocol

    def date_header(self) -> bytes:
        """``Date: ...`` (RFC 9110 asks an origin server with a clock for it), formatted
        once a second."""
        now = int(self.clock.seconds())
        if self._date[0] != now:
            self._date = (now, b"Date: %s\r\n" % datetimeToString(now))
        return self._date[1]


class _Request:
    """One request being read, and then its answer (None until it is ready)."""

    __slots__ = (
        "answer", "authorization", "body", "close", "expect", "head_done", "head_size",
        "headers", "refused", "url",
    )  # fmt: skip

    def __init__(self) -> None:
        self.url = b""
        self.authorization: bytes | None = None
        self.body: list[bytes] = []
        self.refused = False  # answered already (413, 431, 400): not run
        self.expect = False
        self.close = False
        self.head_done = False  # fields after this are trailers: ignored
        self.head_size = 0
        self.headers = 0
        self.answer: bytes | None = None


class LeanApiProtocol(Protocol):
    """One connection of the API port. Its timer is the request's deadline while a request
    is arriving, else the idle timeout (the site's ``timeOut``, as twisted.web has it). Once an
    answer that closes the connection is queued (``Connection: close``, a refused body, a
    malformed request), nothing after it is read or run."""

    factory: LeanApiFactory

    _parser: httptools.HttpRequestParser | None = None
    _ticket: str | None = None
    _timer: IDelayedCall | None = None
    _timing: str | None = None  # what the timer stands for: DEADLINE or IDLE
    _stopped = False  # a closing answer is queued: nothing more is read or run
    _lost = False
    _head_began_here = False

    def connectionMade(self) -> None:
        self._head = b""  # what arrived before the first request line was whole
        self._reading: _Request | None = None
        self._answers: deque[_Request] = deque()  # in request order, for pipelining
        self._received = 0
        self._head_bytes = 0
        transport = self.transport
        assert transport is not None
        admitted = self.factory.admission.arrive(peer_host(transport.getPeer()))
        if isinstance(admitted, tuple):  # the site answers the refusal to every request
            self._hand_over(refusal=admitted)
            return
        self._ticket = admitted
        # Its flow control: while the transport cannot take more answers, read nothing.
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._time(IDLE)

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._timing != DEADLINE:
            self._time(DEADLINE)  # a request's first byte
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
            self._head_began_here = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # refused already (on_headers_complete): nothing after it is read
        except httptools.HttpParserCallbackError as error:  # one of ours raised: a bug
            log.failure("reading an API request failed", Failure(error.__context__ or error))
            self._unreadable(str(error))
        except httptools.HttpParserError as error:
            self._unreadable(str(error))
        else:
            self._count_head(len(data))

    def _unreadable(self, why: str) -> None:
        """llhttp stopped: unless a closing answer is queued already (its callbacks may have
        queued one), the request is answered 400 (413 for a length over 2^64, as twisted.web
        answers it) and the connection closed."""
        if self._stopped:
            return
        self._reading = self._reading or _Request()
        if "Content-Length overflow" in why:
            self._refuse(413)
        else:
            self._refuse(400, "malformed HTTP request")

    def _count_head(self, size: int) -> None:
        """A head still arriving after this read: what llhttp holds of it is bounded too (a
        header line without end is never handed to ``on_header``)."""
        request = self._reading
        if request is None or request.head_done or self._stopped:
            return
        if self._head_began_here:  # part of this read may be earlier requests
            self._head_began_here = False
            return
        self._head_bytes += size
        if self._head_bytes > LARGEST_HEAD:
            self._refuse(431)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._cancel_timer()
        if self._ticket is not None:
            self.factory.admission.leave(self._ticket)
            self._ticket = None

    # -- IPushProducer: the transport's flow control ---------------------------------------

    def pauseProducing(self) -> None:
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]  # stop reading

    def resumeProducing(self) -> None:
        if self.transport is not None and not self._stopped:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        self._stopped = True

    # -- llhttp's callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reading = _Request()
        self._received = 0
        self._head_bytes = 0
        self._head_began_here = True
        if self._timing != DEADLINE:  # pipelined behind one just read
            self._time(DEADLINE)

    def on_url(self, url: bytes) -> None:
        request = self._reading
        assert request is not None
        request.url += url
        request.head_size += len(url)
        if request.head_size > LARGEST_HEAD and not request.refused:
            self._refuse(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._reading
        assert request is not None
        if request.head_done or request.refused:  # a trailer, or refused already
            return
        request.head_size += len(name) + len(value)
        request.headers += 1
        if request.head_size > LARGEST_HEAD or request.headers > MOST_HEADERS:
            self._refuse(431)
            return
        name = name.lower()
        if name == b"authorization":
            request.authorization = value.strip()
        elif name == b"content-length":
            value = value.strip()
            if not value.isdigit() or int(value) > self.factory.api.max_body:
                self._refuse(413)
        elif name == b"expect":
            request.expect = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        request = self._reading
        assert request is not None and self._parser is not None
        request.head_done = True
        if request.refused:
            return
        if self._parser.should_upgrade():
            self._refuse(400, "open /ws/v1 on a connection of its own")
        elif request.expect and self._parser.get_http_version() != "1.0":
            interim = _Request()
            self._answers.append(interim)  # in its turn, behind the answers before it
            self._ready(interim, None)

    def on_body(self, chunk: bytes) -> None:
        request = self._reading
        assert request is not None
        if request.refused:
            return
        self._received += len(chunk)
        if self._received > self.factory.api.max_body:
            self._refuse(413)
            return
        request.body.append(chunk)

    def on_message_complete(self) -> None:
        request, self._reading = self._reading, None
        assert request is not None and self._parser is not None
        if request.refused or self._stopped:
            return
        self._time(IDLE)  # whole: idle until the next one begins
        request.close = not self._parser.should_keep_alive()
        if request.close:
            self._stopped = True  # what follows a closing request is not run
        self._answers.append(request)
        method = self._parser.get_method()
        try:
            self._dispatch(method, request)
        except Exception:  # a bug: this request gets a 500, the connection goes on
            self._failed(Failure(), request)

    def _dispatch(self, method: bytes, request: _Request) -> None:
        route = ROUTES.get((method, request.url))
        api = self.factory.api
        if route == "publish" or route == "kick":
            send = api.publish if route == "publish" else api.kick
            answered = send(request.authorization, b"".join(request.body))
            answered.addCallbacks(
                self._answered, self._failed, callbackArgs=(request,), errbackArgs=(request,)
            )
        elif route == "health":
            self._ready(request, api.health())
        elif route == "metrics":
            self._ready(request, api.metrics())
        else:
            body = b"" if method == b"HEAD" else b"this connection serves the API\n"
            self._ready(request, (404, b"text/plain", body))

    def _failed(self, failure: Failure, request: _Request) -> None:
        """Answering ``request`` raised (a bug, never a refusal: those are answers): logged
        and answered 500, as twisted.web's ``processingFailed`` does, so that the answers
        queued behind it still go out."""
        log.failure("answering {url} failed", failure, url=request.url)
        self._ready(request, (500, b"text/plain", b"internal error\n"))

    # -- answers ------------------------------------------------------------------------

    def _answered(self, outcome: tuple[int, dict], request: _Request) -> None:
        status, body = outcome
        self._ready(request, (status, JSON, encode(body)))

    def _ready(self, request: _Request, answer: Answer | None) -> None:
        """``request``'s answer is known (None: ``100 Continue``); what is ready at the head
        of the queue goes out, in order."""
        if answer is None:
            request.answer = CONTINUE
        else:
            status, content_type, body = answer
            close = b"Connection: close\r\n" if request.close else b""
            request.answer = b"%s%sContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
                _STATUS_LINES[status], self.factory.date_header(), content_type, len(body),
                close, body,
            )  # fmt: skip
        answers = self._answers
        while answers and answers[0].answer is not None:
            done = answers.popleft()
            transport = self.transport
            if transport is None or self._lost:
                continue
            assert done.answer is not None
            self.factory.turn_writer.write(transport, done.answer)
            if done.close:
                self._close()

    def _refuse(self, status: int, why: str | None = None) -> None:
        """Answer the request being read now (413: a body over the limit, from its
        Content-Length or as it passes it; 431: a head too large; 400), after the answers
        before it, then close: nothing after it is read or run."""
        request = self._reading
        assert request is not None
        request.refused = request.close = True
        self._stopped = True
        self._answers.append(request)
        if status == 413:
            limit = self.factory.api.max_body
            error = too_large(limit)
            self.factory.api.count_refusal(error)
            self._ready(request, (413, JSON, encode(error.answer())))
        else:
            text = why or ("request head too large" if status == 431 else "bad request")
            self._ready(request, (status, b"text/plain", text.encode() + b"\n"))

    def _close(self) -> None:
        self._stopped = True
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        self.factory.turn_writer.flush_one(transport)
        transport.loseConnection()

    def _time(self, timing: str) -> None:
        """The connection's one timer now stands for ``timing``: the request's deadline, or
        the idle timeout. Moved (``reset``), not cancelled and made again: this happens
        twice per request."""
        factory = self.factory
        seconds = factory.deadline if timing == DEADLINE else factory.idle_timeout
        self._timing = timing
        if self._timer is not None and self._timer.active():
            self._timer.reset(seconds)
        else:
            self._timer = factory.clock.callLater(seconds, self._expired)

    def _expired(self) -> None:
        timing, self._timer, self._timing = self._timing, None, None
        if timing == DEADLINE:  # the request did not arrive whole in time (slowloris): cut
            self.factory.site.slow_requests += 1
            transport = self.transport
            assert transport is not None
            self.factory.turn_writer.discard(transport)
            transport.abortConnection()  # type: ignore[attr-defined]  # TCP and TLS have it
        elif not self._answers:  # idle as long as twisted.web's site allows: closed
            self._close()
        else:  # an answer is still being worked out (the mesh's deadline bounds it)
            self._time(IDLE)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._timing = None

    # -- to twisted.web -----------------------------------------------------------------

    def _hand_over(self, refusal: tuple[int, str] | None = None) -> None:
        """The site's HTTP channel takes the connection, with its ticket (or refusal) and
        what was read of it; this protocol hears no more of it."""
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        if getattr(transport, "producer", None) is self:
            transport.unregisterProducer()  # type: ignore[attr-defined]  # the channel's now
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
