"""One timer pings every connection and drops those that went silent."""

from twisted.internet.task import Clock

from exchange_stream.services.heartbeat import PING_FRAME, Heartbeat


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
