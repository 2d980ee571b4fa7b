"""The write that makes a client too slow closes it, and nothing is written after the close."""

from exchange_stream.core.config import GatewayConfig
from tests.support import open_protocol


def open_paused_connection(max_backlog=100):
    gateway, protocol, transport = open_protocol(GatewayConfig(max_backlog=max_backlog))
    protocol.pauseProducing()  # the client stopped reading
    return gateway, protocol, transport


def sent(gateway, transport) -> bytes:
    """What reached the transport once the reactor turn ended (frames leave per turn)."""
    gateway.reactor.advance(0)
    return transport.value()


def test_a_reply_over_the_backlog_closes_with_4100_and_raises_nothing():
    gateway, protocol, transport = open_paused_connection()
    protocol.send_reply(b"x" * 60)
    assert sent(gateway, transport)[2:] == b"x" * 60  # under the bound: written
    transport.clear()
    protocol.send_reply(b"y" * 60)  # over it: not written, the connection is closed instead
    written = sent(gateway, transport)
    assert written[:1] == b"\x88"  # a close frame ...
    assert int.from_bytes(written[2:4], "big") == 4100  # ... with 4100
    assert gateway.factory.slow_consumers == 1


def test_no_data_frame_follows_the_close_frame():
    gateway, protocol, transport = open_paused_connection()
    prepared = protocol.factory.prepareMessage(b"z" * 150)
    protocol.sendPreparedMessage(prepared)
    written = sent(gateway, transport)
    assert written[:1] == b"\x88" and b"z" not in written
    transport.clear()
    protocol.sendPreparedMessage(prepared)  # closing: nothing more
    assert sent(gateway, transport) == b""
