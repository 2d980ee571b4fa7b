"""A paused connection's frames wait in order; past the bound they are dropped and the 4100
close frame is the next thing written; the connection then has a grace period to read it."""

from exchange_stream.core.config import GatewayConfig
from tests.support import open_protocol


def open_paused_connection(max_backlog=100, grace=10.0):
    config = GatewayConfig(max_backlog=max_backlog, slow_client_grace=grace, ping_interval=0)
    gateway, protocol, transport = open_protocol(config)
    protocol.pauseProducing()  # the transport's buffer is full: the client stopped reading
    return gateway, protocol, transport


def sent(gateway, transport) -> bytes:
    """What reached the transport once the reactor turn ended (frames leave per turn)."""
    gateway.reactor.advance(0)
    return transport.value()


def test_frames_written_while_paused_wait_and_go_out_in_order_on_resume():
    gateway, protocol, transport = open_paused_connection()
    protocol.send_reply(b"a" * 40)
    protocol.sendPreparedMessage(protocol.factory.prepareMessage(b"b" * 40))
    assert sent(gateway, transport) == b""  # nothing added to a full transport
    protocol.resumeProducing()
    written = sent(gateway, transport)
    assert written == b"\x81\x28" + b"a" * 40 + b"\x81\x28" + b"b" * 40
    protocol.send_reply(b"c" * 5)  # resumed: straight out again
    assert sent(gateway, transport).endswith(b"\x81\x05ccccc")


def test_a_resume_hands_over_only_until_the_transport_is_full_again():
    _, protocol, transport = open_paused_connection(max_backlog=10_000)
    for letter in b"abc":
        protocol.send_reply(bytes([letter]) * 50)
    original_write = transport.write

    def write_then_fill(data):  # the first frame fills the buffer again
        original_write(data)
        protocol.pauseProducing()

    transport.write = write_then_fill
    protocol.resumeProducing()
    assert transport.value() == b"\x81\x32" + b"a" * 50
    transport.write = original_write
    protocol.resumeProducing()
    assert transport.value().endswith(b"b" * 50 + b"\x81\x32" + b"c" * 50)


def test_over_the_backlog_the_waiting_frames_are_dropped_and_the_close_frame_is_next():
    gateway, protocol, transport = open_paused_connection()
    protocol.send_reply(b"x" * 60)
    protocol.send_reply(b"y" * 60)  # 124 bytes waiting > 100: too slow
    written = sent(gateway, transport)
    assert written[:1] == b"\x88"  # a close frame, nothing before it ...
    assert int.from_bytes(written[2:4], "big") == 4100  # ... with 4100
    assert b"x" not in written and b"y" not in written
    assert gateway.factory.slow_consumers == 1
    transport.clear()
    protocol.sendPreparedMessage(protocol.factory.prepareMessage(b"z" * 10))  # closing
    protocol.resumeProducing()
    assert sent(gateway, transport) == b""  # nothing follows the close frame


def test_the_connection_is_kept_for_the_grace_period_then_dropped(clock):
    gateway, protocol, transport = open_paused_connection(grace=10.0)
    protocol.send_reply(b"x" * 200)
    gateway.reactor.advance(0)
    clock.advance(9.0)  # Autobahn's close-handshake timer, on txaio's loop (batched: ~1 s)
    assert not transport.disconnecting and not transport.disconnected
    clock.advance(2.0)
    assert transport.disconnecting or transport.disconnected  # aborted after 10 s


def test_no_ping_is_added_to_what_waits():
    gateway, protocol, transport = open_paused_connection()
    protocol.send_ping(b"\x89\x00")
    assert sent(gateway, transport) == b""
