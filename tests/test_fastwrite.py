"""Writing at once when a TCP transport's queue is empty: same bytes, same order."""

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol

from exchange_stream.fastwrite import write_now


class Sink(Protocol):
    def __init__(self, expected: int):
        self.expected = expected
        self.data = bytearray()
        self.done = Deferred()

    def dataReceived(self, data):
        self.data += data
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.data))


@pytest_twisted.ensureDeferred
async def test_small_writes_leave_nothing_queued_and_big_ones_keep_their_order():
    accepted = Deferred()

    class Server(Protocol):
        def connectionMade(self):
            accepted.callback(self.transport)

    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(Server)
    )
    big = b"a" * (8 * 1024 * 1024)
    sink = Sink(expected=3 + len(big) + 3)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
        Factory.forProtocol(lambda: sink)
    )
    transport = await accepted
    try:
        write_now(transport, b"one")
        assert not transport.dataBuffer and transport._tempDataLen == 0  # sent at once
        write_now(transport, big)  # more than the kernel takes: the rest is queued ...
        write_now(transport, b"two")  # ... and this goes behind it
        received = await sink.done
        assert received == b"one" + big + b"two"
    finally:
        transport.loseConnection()
        await port.stopListening()
