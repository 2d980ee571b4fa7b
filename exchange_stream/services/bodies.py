"""Reading an HTTP answer's body within a bound, for the back ends the gateway asks (the auth
back end, a ``--book-url``): one that answers too much is refused, and not kept in memory."""

from __future__ import annotations

from collections.abc import Callable

import treq
from twisted.internet.defer import Deferred


def bounded_body(response, limit: int, refusal: Callable[[str], Exception]) -> Deferred:
    """The body of treq's ``response``, failing with ``refusal(why)`` once it passes ``limit``
    bytes: announced by Content-Length (refused at its first chunk, which is dropped), or as it
    arrives (the rest is not read). Raising in treq's collector closes the connection, so the
    pool is not left a paused response."""
    length = response.length
    if isinstance(length, int) and length > limit:

        def refuse(_: bytes) -> None:
            raise refusal(f"answered {length} bytes, more than {limit}")

        return treq.collect(response, refuse)
    chunks: list[bytes] = []
    size = [0]

    def collect(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > limit:
            raise refusal(f"answered more than {limit} bytes")
        chunks.append(data)

    collecting = treq.collect(response, collect)
    collecting.addCallback(lambda _: b"".join(chunks))
    return collecting
