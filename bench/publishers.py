"""Publishing to a server under test: the payload wsload checks, and one pipelined
connection that keeps at most a window of requests unanswered and counts the answers.

Shared by ``peers.py`` (one channel) and ``channels.py`` (a channel per client).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from common import LOOPBACK
from websockets.sync.client import connect as ws_connect

CHANNEL = "BTCUSDT@depth"


def payload(seq: int, sent_ns: int, size: int, event: str = CHANNEL) -> str:
    """The published text, ``size`` bytes; wsload finds seq and T in it by their keys."""
    head = f'{{"event":"{event}","data":{{"seq":{seq},"t":{sent_ns},"pad":"'
    return head + "x" * (size - len(head) - 3) + '"}}'


@dataclass
class PublishStats:
    """What the publisher did: sent and answered publishes, and its timing."""

    sent: int = 0
    answered: int = 0
    refused: int = 0
    first_ns: int = 0
    last_ns: int = 0
    max_lag_s: float = 0.0  # with a rate: the worst delay of a send behind its schedule
    error: str | None = None


def paced_sends(
    count: int, rate: float | None, slots: threading.Semaphore, stats: PublishStats
) -> Iterator[int]:
    """Yield each number when it may go: on schedule (``rate``) and with a free window slot.

    Stops early when the answer side has set ``stats.error`` or no slot frees up in 30 s.
    """
    start = time.monotonic()
    for number in range(count):
        if rate:
            delay = start + number / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if not slots.acquire(timeout=30) and not stats.error:
            stats.error = "no answer for 30 s"
        if stats.error:
            return
        if rate:
            stats.max_lag_s = max(stats.max_lag_s, time.monotonic() - start - number / rate)
        yield number


# Builds request n's bytes, given the send time that its payloads carry.
Request = Callable[[int, int], bytes]


class PipelinedPublisher:
    """Publish requests on one connection, at most ``window`` of them unanswered.

    ``send`` writes one request's bytes; ``answer`` blocks for the next answer and says
    whether it accepted every publish in its request; ``close`` ends the connection, which
    also wakes a reader waiting for an answer that will not come. A thread reads the answers
    in order and frees window slots. One connection keeps the publishes in order, so every
    client must see seq 0, 1, 2, ...
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        answer: Callable[[], bool],
        close: Callable[[], None],
    ) -> None:
        self._send, self._answer, self._close = send, answer, close

    def __enter__(self) -> PipelinedPublisher:
        return self

    def __exit__(self, *_: object) -> None:
        self._close()

    def run(
        self, request: Request, sizes: list[int], rate: float | None, window: int
    ) -> PublishStats:
        """Send ``request(n, sent_ns)`` for every n, paced at ``rate`` requests/s if given;
        ``sizes[n]`` is how many publishes request n carries."""
        stats = PublishStats()
        slots = threading.Semaphore(window)
        reader = threading.Thread(target=self._answers, args=(sizes, slots, stats))
        reader.start()
        done = False
        try:
            for number in paced_sends(len(sizes), rate, slots, stats):
                sent_ns = time.monotonic_ns()
                self._send(request(number, sent_ns))
                stats.first_ns = stats.first_ns or sent_ns
                stats.last_ns = sent_ns
                stats.sent += sizes[number]
            done = True
        except Exception as error:  # OSError, or websockets' ConnectionClosed
            stats.error = f"send: {error!r}"
        finally:
            if not done:  # An error or Ctrl-C: the reader is not to wait for more answers.
                self._close()
            reader.join(60)
        return stats

    def _answers(self, sizes: list[int], slots: threading.Semaphore, stats: PublishStats) -> None:
        try:
            for size in sizes:
                if stats.error:
                    break
                if self._answer():
                    stats.answered += size
                else:
                    stats.refused += size
                slots.release()
        except Exception as error:  # a closed socket or WebSocket, a timeout: the run is over
            stats.error = stats.error or f"answers: {error!r}"
        finally:
            slots.release(len(sizes) or 1)  # Wake the sender if it waits for a slot.


def read_http_response(file: IO[bytes]) -> tuple[int, bytes]:
    """One HTTP/1.1 response from a buffered socket file: (status, body)."""
    status_line = file.readline(8192)
    if not status_line:
        raise ValueError("connection closed")
    status = int(status_line.split()[1])
    headers = {}
    while (line := file.readline(8192)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while chunk_size := int(file.readline(8192).split(b";")[0], 16):
            chunks.append(file.read(chunk_size))
            file.readline(8192)  # The CRLF after the chunk.
        while file.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # Trailers, then the empty line.
        return status, b"".join(chunks)
    return status, file.read(int(headers.get("content-length", "0")))


def http_request(port: int, path: str, body: bytes) -> bytes:
    """A keep-alive POST as it goes on the wire."""
    head = f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def http_publisher(port: int, accept: Callable[[int, bytes], bool]) -> PipelinedPublisher:
    """Pipelined POSTs on one keep-alive connection; ``accept(status, body)`` judges answers."""
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    file = sock.makefile("rb")

    def close() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    return PipelinedPublisher(sock.sendall, lambda: accept(*read_http_response(file)), close)


def websocket_publisher(
    url: str, accept: Callable[[str], bool], echo_url: str | None = None
) -> PipelinedPublisher:
    """Text frames on one WebSocket connection; ``accept`` judges the next frame that comes
    back, on the ``echo_url`` connection if given (opened first), else on the same one."""
    options: dict[str, Any] = {
        "compression": None, "max_size": None, "open_timeout": 10, "ping_interval": None,
    }  # fmt: skip
    echo = ws_connect(echo_url, **options) if echo_url else None
    connection = ws_connect(url, **options)
    answers = echo or connection

    def close() -> None:
        answers.close()
        connection.close()

    return PipelinedPublisher(
        lambda data: connection.send(data.decode()),
        lambda: accept(str(answers.recv(timeout=30))),
        close,
    )
