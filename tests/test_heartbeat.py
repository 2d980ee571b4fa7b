"""One timer pings every connection and drops those that went silent."""

from twisted.internet.task import Clock

from exchange_stream.core.config import GatewayConfig
from exchange_stream.services.heartbeat import PING_FRAME, Heartbeat
from tests.support import MemoryClient, memory_gateway


class Peer:
    def __init__(self, last_heard):
        self.last_heard = last_heard
        self.pings = []
        self.dropped = False

    def send_ping(self, frame):
        self.pings.append(frame)

    def drop_dead(self):
        self.dropped = True


def test_pings_everyone_and_drops_the_silent():
    clock = Clock()
    talkative, silent = Peer(0.0), Peer(0.0)
    heartbeat = Heartbeat(lambda: [talkative, silent], clock, interval=20, timeout=10)
    heartbeat.startService()
    clock.advance(20)
    assert talkative.pings == silent.pings == [PING_FRAME]
    talkative.last_heard = 20.5  # its pong
    clock.advance(20)  # t=40: silent heard 40 s ago, allowed 30
    assert silent.dropped and not talkative.dropped
    assert talkative.pings == [PING_FRAME] * 2 and len(silent.pings) == 1
    assert heartbeat.dropped == 1
    heartbeat.stopService()


def test_a_ping_frame_is_a_bare_unmasked_ping():
    assert PING_FRAME[0] & 0x0F == 0x9 and PING_FRAME[0] & 0x80  # FIN, opcode ping
    assert PING_FRAME[1] == 0  # no mask bit, no payload


def test_through_the_protocol_a_pong_keeps_a_client_and_silence_drops_it(clock):
    """On a gateway: a ping frame goes to every client each interval; a client that answers
    stays, one silent for interval + timeout is aborted and its session ends."""
    gateway = memory_gateway(clock, GatewayConfig(ping_interval=5, ping_timeout=5))
    alive, silent = MemoryClient(gateway, 5555), MemoryClient(gateway, 5556)
    for _ in range(2):  # t = 5, 10: silent for 10 s at most, not more than allowed
        clock.advance(5)
        assert alive.frames() == silent.frames() == [(0x9, b"")]
        alive.send(b"", opcode=0xA)  # the pong
    clock.advance(5)  # t = 15: silent since t = 0
    assert silent.frames() == [] and silent.transport.disconnecting and silent.lost
    assert alive.frames() == [(0x9, b"")] and not alive.transport.disconnecting
    assert len(gateway.sessions) == 1
    clock.advance(5)  # t = 20: heard at t = 10, exactly as long ago as allowed
    assert alive.frames() == [(0x9, b"")]
    assert alive.request({"op": "ping", "id": 1})[0]["op"] == "pong"  # any frame answers
    clock.advance(10)  # t = 30: heard at t = 20
    assert not alive.lost
    clock.advance(5)  # t = 35: silent since t = 20
    assert alive.lost and len(gateway.sessions) == 0
