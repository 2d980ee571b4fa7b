"""The HTTP auth back end client, against an in-memory twisted.web resource (StubTreq)."""

import json

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from exchange_stream.services.auth import (
    AuthFailed,
    AuthUnavailable,
    HttpAuthenticator,
    IAuthenticator,
    Identity,
    MeteredAuthenticator,
    StaticAuthenticator,
)


class Backend(Resource):
    isLeaf = True

    def __init__(self, status=200, body=b'{"uid":1001}', hang=False):
        super().__init__()
        self.status, self.body, self.hang = status, body, hang
        self.seen = []

    def render_POST(self, request):
        self.seen.append((request.getHeader("content-type"), json.loads(request.content.read())))
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return self.body


def authenticate(backend, token="tok", clock=None):
    authenticator = HttpAuthenticator(
        "http://auth.example/websocket_auth", StubTreq(backend), clock or Clock(), timeout=2.0
    )
    return authenticator.authenticate(token)


def outcome(deferred):
    results = []
    deferred.addBoth(results.append)
    assert results, "the Deferred should have fired"
    result = results[0]
    if hasattr(result, "trap"):
        result.trap(AuthFailed, AuthUnavailable)  # nothing else may come out
        return result.type
    assert isinstance(result, Identity)
    return result.uid if result.expires is None else (result.uid, result.expires)


def test_implementations_provide_the_interface():
    assert verifyObject(
        IAuthenticator, HttpAuthenticator("http://x/", StubTreq(Backend()), Clock())
    )
    assert verifyObject(IAuthenticator, StaticAuthenticator({}))
    assert verifyObject(IAuthenticator, MeteredAuthenticator(StaticAuthenticator({}), print))


def test_token_goes_out_as_proper_json():
    backend = Backend()
    assert outcome(authenticate(backend, token='we"ird\\tok\u00e9n')) == "1001"
    assert backend.seen == [("application/json", {"token": 'we"ird\\tok\u00e9n'})]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"uid":"abc_1"}', "abc_1"),
        (401, b'{"uid":1001}', AuthFailed),
        (403, b"", AuthFailed),
        (404, b"not found", AuthFailed),
        (200, b"<html>", AuthFailed),
        (200, b"[1001]", AuthFailed),
        (200, b"{}", AuthFailed),
        (200, b'{"uid":true}', AuthFailed),
        (200, b'{"uid":0}', AuthFailed),
        (200, b'{"uid":"1002@balance"}', AuthFailed),
        (200, b'{"uid":"ex:1002"}', AuthFailed),
        (200, b'{"uid":null}', AuthFailed),
        (200, b'{"uid":"-1002"}', AuthFailed),
        (200, b'{"uid":"01002"}', AuthFailed),
        (200, b'{"uid":"1002"}', "1002"),
        (200, b'{"uid":"-abc"}', "-abc"),
        (302, b"", AuthFailed),  # an SSO redirect: a rejection, not an outage
        (301, b'{"uid":1001}', AuthFailed),
        (500, b"", AuthUnavailable),
        (503, b'{"uid":1001}', AuthUnavailable),
    ],
)
def test_back_end_answers_are_classified(status, body, expected):
    assert outcome(authenticate(Backend(status, body))) == expected


def test_empty_token_is_refused_without_asking():
    backend = Backend()
    assert outcome(authenticate(backend, token="")) == AuthFailed
    assert backend.seen == []


def test_a_silent_back_end_times_out_as_unavailable():
    clock = Clock()
    attempt = authenticate(Backend(hang=True), clock=clock)
    results = []
    attempt.addBoth(results.append)
    clock.advance(1.9)
    assert results == []
    clock.advance(0.2)
    assert results[0].type is AuthUnavailable


def test_static_map():
    authenticator = StaticAuthenticator({"demo-1001": 1001})
    assert outcome(authenticator.authenticate("demo-1001")) == "1001"
    assert outcome(authenticator.authenticate("demo-1002")) == AuthFailed
    with pytest.raises(ValueError):
        StaticAuthenticator({"t": "bad uid"})


def test_metered_authenticator_records_outcomes():
    records = []
    ticks = iter([10.0, 10.5, 20.0, 20.25])
    metered = MeteredAuthenticator(
        StaticAuthenticator({"ok": 1}),
        lambda o, s: records.append((o, s)),
        clock=lambda: next(ticks),
    )
    assert outcome(metered.authenticate("ok")) == "1"
    assert outcome(metered.authenticate("no")) == AuthFailed
    assert records == [("ok", 0.5), ("failed", 0.25)]


def test_expiry_from_the_back_end():
    clock = Clock()
    clock.advance(1_000)
    assert outcome(authenticate(Backend(body=b'{"uid":7,"exp":1060}'), clock=clock)) == (
        "7",
        1060.0,
    )
    refused = (b'{"uid":7,"exp":999}', b'{"uid":7,"exp":"soon"}', b'{"uid":7,"exp":true}')
    refused += (b'{"uid":7,"exp":NaN}', b'{"uid":7,"exp":Infinity}', b'{"uid":7,"exp":-Infinity}')
    for body in refused:
        assert outcome(authenticate(Backend(body=body), clock=clock)) == AuthFailed, body


class Chunked(Resource):
    """An answer without Content-Length, written in ``chunks`` pieces of ``size`` bytes."""

    isLeaf = True

    def __init__(self, chunks, size=8192):
        super().__init__()
        self.chunks, self.size = chunks, size
        self.written = 0

    def render_POST(self, request):
        for _ in range(self.chunks):
            request.write(b" " * self.size)
            self.written += self.size
        request.write(b'{"uid":1001}')
        request.finish()
        return NOT_DONE_YET


def test_an_answer_too_big_is_refused_and_not_kept():
    big = b'{"uid":1001,"pad":"' + b"x" * (HttpAuthenticator.MAX_ANSWER + 1) + b'"}'
    assert outcome(authenticate(Backend(body=big))) == AuthFailed  # announced by its length
    assert outcome(authenticate(Chunked(chunks=20))) == AuthFailed  # 160 KiB, streamed
    assert outcome(authenticate(Chunked(chunks=2))) == "1001"  # 16 KiB: fine
