"""``GET /v1/market/klines``: the bars history for charts, on the public WebSocket port.

Any gateway answers it from its mesh, whether or not it runs the market engine: the closed
bars from the bars channel (``IMesh.recent``) and the open bar from the kline channel's
snapshot. What a query means and how the answer is built is in ``core.market.bars``; this
resource carries it over HTTP, with CORS headers so that a page on another origin can read it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from exchange_stream.adapters.web import respond
from exchange_stream.core.encoding import encode
from exchange_stream.core.market.bars import (
    PATH,
    UNAVAILABLE,
    BarsError,
    answer,
    kline_channel,
    open_bar,
    parse_query,
)
from exchange_stream.core.publication import MeshOutcomeUnknown, MeshUnavailable, Publication
from exchange_stream.core.streams import bars_channel
from exchange_stream.interfaces import IMesh

log = Logger()

SEGMENTS = [segment.encode() for segment in PATH.strip("/").split("/")]
METHODS = b"GET, HEAD, OPTIONS"


def _cors(request: Request) -> None:
    request.setHeader(b"Access-Control-Allow-Origin", b"*")


def _json(request: Request, status: int, body: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-cache")
    return body


class KlinesResource(Resource):
    """``GET`` (and ``HEAD``) answers the bars as a JSON array, 400 a refused query, 503 when
    the mesh cannot answer; ``OPTIONS`` is the CORS preflight (204); any other method 405,
    any path below it 404."""

    isLeaf = True

    def __init__(self, mesh: IMesh, prefix: str) -> None:
        super().__init__()
        self._mesh = mesh
        self._prefix = prefix

    def render(self, request: Request) -> bytes | int:
        _cors(request)
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return b""
        return super().render(request)  # render_GET, render_OPTIONS, or 405 with Allow

    def render_OPTIONS(self, request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"Access-Control-Allow-Methods", METHODS)
        asked = request.getHeader(b"Access-Control-Request-Headers")
        if asked:
            request.setHeader(b"Access-Control-Allow-Headers", asked)
        request.setHeader(b"Access-Control-Max-Age", b"86400")
        return b""

    def render_GET(self, request: Request) -> bytes | int:
        try:
            query = parse_query(request.args or {})
        except BarsError as error:
            return _json(request, error.status, encode(error.answer()))
        names = (self._prefix, query.symbol, query.interval)
        reading = gatherResults(
            [
                self._mesh.recent(bars_channel(*names), query.count()),
                self._mesh.snapshot(kline_channel(*names)),
            ],
            consumeErrors=True,
        )

        def answered(results: list) -> tuple[int, bytes]:
            closed: list[Publication] = results[0]
            snapshot: Publication | None = results[1]
            current = open_bar(snapshot.payload if snapshot is not None else None)
            return 200, answer((p.payload for p in closed), current, query)

        def failed(failure: Failure) -> tuple[int, bytes]:
            failure.trap(FirstError)
            first = failure.value
            assert isinstance(first, FirstError)
            reason = first.subFailure
            if reason.check(MeshUnavailable, MeshOutcomeUnknown):
                return UNAVAILABLE.status, encode(UNAVAILABLE.answer())
            log.failure("bars history for {query} failed", reason, query=query)
            return 500, encode({"code": -1000, "msg": "An unknown error occurred."})

        outcome: Deferred = reading.addCallbacks(answered, failed)
        return respond(request, outcome, _json)


def overlaps(path: str) -> bool:
    """Whether a WebSocket at ``path`` would hide the history, or sit under it: one path is
    the other or a folder of it (``/v1``, ``/v1/market/klines/ws``)."""
    segments = [segment.encode() for segment in path.strip("/").split("/")]
    shorter = min(len(segments), len(SEGMENTS))
    return segments[:shorter] == SEGMENTS[:shorter]


class BesideWebSocket(Resource):
    """The root when the WebSocket is at ``/``: ``/v1/market/klines`` is the history and
    every other path is the WebSocket (as when it is the root itself)."""

    def __init__(self, websocket: IResource, klines: IResource) -> None:
        super().__init__()
        self._websocket = websocket
        self._klines = klines

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        rest, before = request.postpath, request.prepath
        assert rest is not None and before is not None  # set by the site before traversal
        below = len(SEGMENTS) - 1  # the segments after this one
        if [path, *rest[:below]] == SEGMENTS and rest[below:] in ([], [b""]):
            before.extend(rest[:below])
            del rest[:below]
            return self._klines
        return self._websocket

    def render(self, request: Request) -> bytes | int:
        return self._websocket.render(request)  # not reached: a path has one segment at least
