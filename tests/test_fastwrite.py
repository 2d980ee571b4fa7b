"""Writing at once when a TCP transport's queue is empty, and once per connection per reactor
turn: same bytes, same order."""

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from exchange_stream.adapters.fastwrite import TurnWriter, write_now
from tests.support import open_protocol


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


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)

    def writeSequence(self, chunks):  # one call, whatever StringTransport does inside
        self.writes += 1
        super().write(b"".join(chunks))


def test_a_turns_writes_to_one_transport_leave_in_one_write_in_order_at_its_end():
    clock = Clock()
    turn = TurnWriter(clock)
    first, second = CountingTransport(), CountingTransport()
    turn.write(first, b"a")
    turn.write(second, b"1")
    turn.write(first, b"b")
    turn.write(first, b"c")
    assert first.value() == b"" and len(clock.getDelayedCalls()) == 1  # one call per turn
    clock.advance(0)
    assert (first.value(), first.writes) == (b"abc", 1)
    assert (second.value(), second.writes) == (b"1", 1)
    turn.write(first, b"d")  # a new turn schedules again
    clock.advance(0)
    assert first.value() == b"abcd"


def test_flush_one_sends_that_transports_pending_bytes_now_and_no_others():
    clock = Clock()
    turn = TurnWriter(clock)
    first, second = CountingTransport(), CountingTransport()
    turn.write(first, b"a")
    turn.write(second, b"1")
    turn.flush_one(first)
    assert (first.value(), second.value()) == (b"a", b"")
    clock.advance(0)
    assert (first.value(), second.value()) == (b"a", b"1")


def test_a_reply_pushes_and_the_close_frame_leave_together_and_in_order():
    gateway, protocol, transport = open_protocol(transport=CountingTransport())
    transport.writes = 0  # the handshake's
    protocol.send_reply(b'{"result":true}')
    protocol.sendPreparedMessage(protocol.factory.prepareMessage(b"push"))
    protocol.close(4200, "bye")
    assert transport.value() == b""
    gateway.reactor.advance(0)
    written = transport.value()
    assert transport.writes == 1
    assert written.index(b'{"result":true}') < written.index(b"push") < written.index(b"bye")
    assert written[-7:-5] == b"\x88\x05"  # the close frame last


def test_closing_the_tcp_connection_sends_the_pending_bytes_first():
    _, protocol, transport = open_protocol(transport=CountingTransport())
    protocol.sendPreparedMessage(protocol.factory.prepareMessage(b"last words"))
    protocol.dropConnection(abort=False)
    assert b"last words" in transport.value() and transport.disconnecting


def test_aborting_the_tcp_connection_drops_the_pending_bytes():
    gateway, protocol, transport = open_protocol(transport=CountingTransport())
    protocol.sendPreparedMessage(protocol.factory.prepareMessage(b"never sent"))
    protocol.dropConnection(abort=True)
    gateway.reactor.advance(0)
    assert b"never sent" not in transport.value()
