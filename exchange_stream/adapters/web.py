"""The internal HTTP API on twisted.web, compatible with CONNMIX's mesh API (docs/api.md).

``POST /v1/mesh/publish`` answers ``{"E":null,"r":{"s":n,"f":0}}`` once the mesh accepted the
message, or ``{"E":{"c":N,"m":"..."}}`` with an HTTP status that says whether to retry:
nothing accepted is silently dropped, and a 503 means nothing was sent. What a request means
is in ``core.mesh_api`` and ``services.publisher``; these resources only carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site, UnsupportedMethod

from exchange_stream.core.encoding import encode
from exchange_stream.core.mesh_api import ApiError, too_large
from exchange_stream.services.api import MeshApi
from exchange_stream.services.connections import Admission

T = TypeVar("T")


def _json_body(request: Request, status: int, body: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return encode(body)


def respond(
    request: Request, answered: Deferred, render: Callable[[Request, int, T], bytes]
) -> bytes | int:
    """A resource's answer to ``request`` once ``answered`` fires with ``(status, body)``
    (``render`` sets the headers and gives the bytes): returned at once when it has fired
    already (the memory mesh answers synchronously: twisted.web's plain path), else written
    when it does, unless the client hung up meanwhile."""
    at_once: list[tuple[int, T]] = []
    answered.addCallback(at_once.append)
    if at_once:
        return render(request, *at_once[0])
    hung_up: list[bool] = []
    request.notifyFinish().addErrback(lambda _: hung_up.append(True))

    def finish(_: object) -> None:
        if not hung_up:
            request.write(render(request, *at_once[0]))
            request.finish()

    answered.addCallback(finish)
    return NOT_DONE_YET


def bearer(token: str | None) -> bytes | None:
    """The ``Authorization`` header value that ``--api-token`` requires, if any."""
    return f"Bearer {token}".encode() if token else None


class PublishResource(Resource):
    """``POST /v1/mesh/publish`` or ``/v1/mesh/kick`` (``send``: ``MeshApi.publish`` or
    ``.kick``). Any other method is 405, any path below it 404."""

    isLeaf = True

    def __init__(self, send: Callable[[bytes | None, bytes], Deferred], max_body: int) -> None:
        super().__init__()
        self._send = send
        self._max_body = max_body

    def render(self, request: Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return b""
        if request.method != b"POST":
            raise UnsupportedMethod([b"POST"])  # twisted.web answers 405 with Allow: POST
        return self.render_POST(request)

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None  # twisted.web reads the body before rendering
        body = request.content.read(self._max_body + 1)
        answered = self._send(request.getHeader(b"Authorization"), body)
        return respond(request, answered, _json_body)


class AnswerResource(Resource):
    """``GET`` of an answer computed when asked (``MeshApi.health``, ``.metrics``)."""

    isLeaf = True

    def __init__(self, answer: Callable[[], tuple[int, bytes, bytes]]) -> None:
        super().__init__()
        self._answer = answer

    def render_GET(self, request: Request) -> bytes:
        status, content_type, body = self._answer()
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type)
        return body

    def render_HEAD(self, request: Request) -> bytes:
        """The GET's status and headers, no body (twisted.web would log each HEAD that
        returned one: "I think I'll eat it")."""
        self.render_GET(request)
        return b""


def api_root(api: MeshApi, websocket_api: IResource) -> Resource:
    """``/v1/mesh/publish``, ``/v1/mesh/kick`` (``{"uid": 1001}``: every node ends that user's
    private subscriptions and login; ``s`` is the number of nodes reached), ``/ws/v1``,
    ``/healthz`` and ``/metrics``."""
    root, v1, mesh, websocket = Resource(), Resource(), Resource(), Resource()
    root.putChild(b"v1", v1)
    v1.putChild(b"mesh", mesh)
    mesh.putChild(b"publish", PublishResource(api.publish, api.max_body))
    mesh.putChild(b"kick", PublishResource(api.kick, api.max_body))
    root.putChild(b"ws", websocket)
    websocket.putChild(b"v1", websocket_api)
    root.putChild(b"healthz", AnswerResource(api.health))
    root.putChild(b"metrics", AnswerResource(api.metrics))
    return root


class BoundedRequest(Request):
    """A request whose body may not pass the site's ``max_body``: refused with 413 from its
    ``Content-Length`` before a byte of it is read (twisted.web would spool it to a temporary
    file first), or as it arrives when it has none (chunked)."""

    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        limit = _site(self.channel).max_body
        if limit is not None and length is not None and length > limit:
            self._too_big(limit)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        limit = _site(self.channel).max_body
        self._received += len(data)
        if limit is not None and self._received > limit:
            self._too_big(limit)
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._refused:  # answered 413 already: the rest of its body is not run
            super().process()

    def _too_big(self, limit: int) -> None:
        self._refused = True
        # Answered: no "100 Continue" after the 413 (the channel sends one after gotLength).
        self.requestHeaders.removeHeader(b"expect")
        site = _site(self.channel)
        error = too_large(limit)
        if site.count_refusal is not None:
            site.count_refusal(error)
        body = encode(error.answer())
        head = (
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        transport = self.channel.transport
        if transport is not None:
            transport.write(head + body)
            transport.loseConnection()
        site.refused_bodies += 1


def peer_host(peer: IAddress) -> str:
    """The client address a connection is counted by: the IP, v4 or v6 alike; every peer of a
    UNIX socket (a proxy in front) is one address."""
    return peer.host if isinstance(peer, IPv4Address | IPv6Address) else "unix"


class Refused(Resource):
    """The answer to every request on a connection that was refused when it arrived (too
    many from its address, or on the node): the status and reason, then the connection is
    closed."""

    isLeaf = True

    def __init__(self, status: int, reason: str) -> None:
        super().__init__()
        self._status = status
        self._reason = reason

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self._status, self._reason.encode())  # as a refused handshake
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"connection", b"close")
        transport = request.channel.transport  # the request forgets its channel once done

        def close(_: object) -> None:
            if transport is not None:
                transport.loseConnection()

        request.notifyFinish().addBoth(close)  # also when the client has gone already
        return self._reason.encode() + b"\n"


class DeadlineChannel(HTTPChannel):
    """An HTTP connection whose every request must arrive whole (headers and body) within
    the site's ``deadline`` seconds of its first byte: a request trickled a byte at a time
    (slowloris) is cut, although each byte would restart an idle timeout. A connection
    upgraded to a WebSocket is not an HTTP one any more, and is left alone.

    With the site's ``admission``, the connection is counted from the moment it is accepted:
    it holds a ``ticket`` until it closes, or until a WebSocket takes the connection over
    with its ticket (``take_ticket``). One refused then has its ``refusal`` answered to each
    request (``QuietSite.getResourceFor``)."""

    _deadline_call: IDelayedCall | None = None
    ticket: str | None = None
    refusal: tuple[int, str] | None = None
    counted = False  # by the protocol that had the connection first (http_api.py)

    def connectionMade(self) -> None:
        super().connectionMade()
        admission = _site(self).admission
        if admission is not None and self.transport is not None and not self.counted:
            admitted = admission.arrive(peer_host(self.transport.getPeer()))
            if isinstance(admitted, tuple):
                self.refusal = admitted
            else:
                self.ticket = admitted

    def take_ticket(self) -> str | None:
        """The connection's ticket, for the protocol that takes the connection over (it
        leaves the admission when it closes; this channel will never hear of it)."""
        ticket, self.ticket = self.ticket, None
        return ticket

    def dataReceived(self, data: bytes) -> None:
        site = _site(self)
        if site.deadline is not None and self._deadline_call is None and self.transport:
            self._deadline_call = site.clock.callLater(site.deadline, self._too_slow)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()  # the request is whole: the next one gets its own deadline
        super().allContentReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        admission, ticket = _site(self).admission, self.take_ticket()
        if admission is not None and ticket is not None:
            admission.leave(ticket)
        super().connectionLost(reason)

    def _cancel_deadline(self) -> None:
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None

    def _too_slow(self) -> None:
        self._deadline_call = None
        if self.transport is not None:  # None once a WebSocket took the connection over
            _site(self).slow_requests += 1
            cast(ITCPTransport, self.transport).abortConnection()


class QuietSite(Site):
    """A site without a per-request access log (publishes and handshakes are too frequent
    for one log line each; ``/metrics`` counts them instead), with a ``deadline`` for each
    request to arrive whole, a ``max_body`` enforced before reading and an ``admission``
    counting connections from when they are accepted (``BoundedRequest``,
    ``DeadlineChannel``)."""

    displayTracebacks = False
    # A plain HTTP/1.1 channel, not twisted.web's HTTP/2-negotiating wrapper: neither port
    # speaks HTTP/2, and the deadline needs the channel itself.
    protocol = DeadlineChannel  # type: ignore[assignment]
    requestFactory = BoundedRequest

    def __init__(
        self,
        resource: IResource,
        timeout: float = 60,
        forms: bool = True,
        *,
        deadline: float | None = None,
        max_body: int | None = None,
        clock: IReactorTime | None = None,
        admission: Admission | None = None,
        count_refusal: Callable[[ApiError], object] | None = None,
    ) -> None:
        super().__init__(resource, timeout=timeout, parsePOSTFormSubmission=forms)
        self.deadline = deadline
        self.max_body = max_body
        self.admission = admission
        self.count_refusal = count_refusal  # a body refused before reading, for the metrics
        if clock is None:
            from twisted.internet import reactor as installed

            clock = installed
        self.clock = clock
        self.slow_requests = 0  # cut by the deadline
        self.refused_bodies = 0  # 413 before reading

    def log(self, request: object) -> None:
        pass

    def getResourceFor(self, request: Request) -> IResource:
        refusal = getattr(request.channel, "refusal", None)
        if refusal is not None:
            return Refused(*refusal)
        return super().getResourceFor(request)


def _site(channel: HTTPChannel) -> QuietSite:
    """The site a channel of a ``QuietSite`` belongs to (``Site.buildProtocol`` sets it)."""
    return cast(QuietSite, getattr(channel, "site"))  # noqa: B009 (HTTPChannel does not declare it)


def mount(root: Resource, path: str, resource: IResource) -> None:
    """Put ``resource`` at ``path`` (e.g. ``/exchange-stream`` or ``/ws/v2``) under ``root``."""
    segments = [segment.encode() for segment in path.strip("/").split("/")]
    parent = root
    for segment in segments[:-1]:
        child = parent.children.get(segment)
        if child is None:
            child = Resource()
            parent.putChild(segment, child)
        parent = child
    parent.putChild(segments[-1], resource)
