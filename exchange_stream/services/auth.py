"""Turning a client's token into a uid: the exchange's HTTP endpoint, or a static map.

Tokens are secrets: nothing here logs one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, fail, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from exchange_stream.core.channels import normalize_uid
from exchange_stream.core.encoding import encode
from exchange_stream.interfaces import IAuthenticator
from exchange_stream.services.bodies import bounded_body


class AuthFailed(Exception):
    """The back end rejected the token or returned no valid uid (client error code 5)."""


class AuthUnavailable(Exception):
    """The back end timed out or failed; the client may retry (client error code 6)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token belongs to: the uid (checked by ``normalize_uid``) and, if the back end
    said so, when the login ends (seconds since the epoch)."""

    uid: str
    expires: float | None = None


@implementer(IAuthenticator)
class StaticAuthenticator:
    """A fixed token → uid map (``--demo``, tests, small deployments)."""

    def __init__(self, tokens: Mapping[str, object]) -> None:
        self._tokens = {}
        for token, raw_uid in tokens.items():
            uid = normalize_uid(raw_uid)
            if uid is None:
                raise ValueError(f"invalid uid {raw_uid!r}")
            self._tokens[token] = uid

    def authenticate(self, token: str) -> Deferred:
        uid = self._tokens.get(token)
        return succeed(Identity(uid)) if uid is not None else fail(AuthFailed())


@implementer(IAuthenticator)
class HttpAuthenticator:
    """POST ``{"token": ...}`` to the exchange's endpoint, expect 200 ``{"uid": ...}``, with
    an optional ``"exp"``: when the login ends, in seconds since the epoch (as in a JWT).

    A 3xx or 4xx answer (a redirect is not followed: an SSO login page is a rejection) or a
    200 without a valid uid is a rejection; a timeout, a refused connection or a 5xx answer
    means the back end is unavailable and the client may try again. An answer is read up to
    ``MAX_ANSWER`` bytes: a bigger one is a rejection, and is not kept in memory. ``http`` is
    a treq-like client (an ``HTTPClient``, or ``StubTreq`` in tests).
    """

    MAX_ANSWER = 64 * 1024

    log = Logger()

    def __init__(
        self,
        url: str,
        http: Any,
        reactor: IReactorTime,
        timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._http = http
        self._reactor = reactor

    def authenticate(self, token: str) -> Deferred:
        if not token:
            return fail(AuthFailed())
        attempt = self._ask(token)
        attempt.addTimeout(self.timeout, self._reactor)
        attempt.addErrback(self._classify_failure)
        return attempt

    @inlineCallbacks
    def _ask(self, token: str):
        response = yield self._http.post(
            self.url,
            data=encode({"token": token}),
            headers={b"Content-Type": [b"application/json"]},
            allow_redirects=False,
        )
        body = yield bounded_body(response, self.MAX_ANSWER, _too_much)
        if response.code >= 500:
            self.log.warn(
                "auth back end {url} answered HTTP {code}", url=self.url, code=response.code
            )
            raise AuthUnavailable(f"auth back end answered HTTP {response.code}")
        if response.code != 200:
            raise AuthFailed(f"auth back end answered HTTP {response.code}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise AuthFailed("auth back end answered with no JSON") from None
        uid = normalize_uid(answer.get("uid")) if isinstance(answer, dict) else None
        if uid is None:
            raise AuthFailed("auth back end answered with no valid uid")
        expires = answer.get("exp")
        if expires is None:
            return Identity(uid)
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise AuthFailed("auth back end answered with an exp that is not a number")
        if not math.isfinite(expires):  # json.loads takes NaN and Infinity
            raise AuthFailed("auth back end answered with an exp that is not finite")
        if expires <= self._reactor.seconds():
            raise AuthFailed("the login has expired already")
        return Identity(uid, float(expires))

    def _classify_failure(self, failure):
        if failure.check(AuthFailed, AuthUnavailable):
            return failure
        if failure.check(TimeoutError):
            why = f"no answer within {self.timeout} s"
        else:
            why = failure.getErrorMessage() or failure.type.__name__
        self.log.warn("auth back end {url} unavailable: {why}", url=self.url, why=why)
        raise AuthUnavailable(why)


@implementer(IAuthenticator)
class MeteredAuthenticator:
    """Wraps an authenticator to record outcomes and latency (see ``metrics``)."""

    def __init__(self, inner: IAuthenticator, record, clock=time.monotonic) -> None:
        self._inner = inner
        self._record = record
        self._clock = clock

    def authenticate(self, token: str) -> Deferred:
        started = self._clock()

        def done(result, outcome):
            self._record(outcome, self._clock() - started)
            return result

        def failed(failure):
            outcome = "failed" if failure.check(AuthFailed) else "unavailable"
            return done(failure, outcome)

        return self._inner.authenticate(token).addCallbacks(done, failed, ("ok",))


def _too_much(why: str) -> AuthFailed:
    return AuthFailed(f"auth back end {why}")
