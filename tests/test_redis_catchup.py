"""The Redis mesh's catch-up on a fake clock: what it reads, when, and what it passes on."""

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from exchange_stream.adapters.redis_catchup import CatchUp
from exchange_stream.core.publication import MeshUnavailable, Publication
from exchange_stream.core.streams import History, Position


def at(offset):
    return Publication(b"{}", epoch="E", offset=offset)


class Redis:
    """The history reads the catch-up makes; they fail while ``up`` is False."""

    def __init__(self):
        self.up = True
        self.refusals = 0  # reads refused although Redis is up (e.g. a timeout)
        self.reads = []
        self.log = [at(n) for n in range(1, 4)]

    def read(self, channel, since):
        self.reads.append(since)
        if not self.up or self.refusals:
            self.refusals = max(0, self.refusals - 1)
            return fail(MeshUnavailable("down"))
        after = [p for p in self.log if since is not None and p.offset > since.offset]
        return succeed(History(Position("E", len(self.log)), after))


def catch_up(redis, clock):
    passed = []
    catching = CatchUp(
        lambda channel, publications: passed.extend(p.offset for p in publications),
        redis.read,
        lambda channel: succeed(None),
        lambda channel: True,
        lambda: redis.up,
        clock,
    )
    return catching, passed


def test_a_read_that_failed_while_redis_was_away_waits_for_the_command_connection():
    redis, clock = Redis(), Clock()
    catching, passed = catch_up(redis, clock)
    catching.follow("c")
    redis.log = [at(1)]
    catching.resumed("c")  # the baseline: offset 1
    redis.up = False
    redis.log = [at(n) for n in range(1, 4)]
    catching.arrived("c", at(3))  # 2 was lost, and Redis is away: the read fails
    assert len(redis.reads) == 2
    clock.advance(60)
    assert len(redis.reads) == 2  # no attempt while there is no connection to try on
    redis.up = True
    catching.commands_back()
    assert redis.reads[-1] == Position("E", 1) and passed == [2, 3]


def test_a_read_that_failed_with_redis_up_is_tried_again_once_for_every_channel():
    redis, clock = Redis(), Clock()
    catching, passed = catch_up(redis, clock)
    for channel in ("a", "b"):
        catching.follow(channel)
        catching.resumed(channel)
    redis.refusals = 2
    for channel in ("a", "b"):
        catching.interrupted({channel})
        catching.resumed(channel)
    assert len(clock.getDelayedCalls()) == 1  # one timer for both
    clock.advance(catching.retry_after)
    assert passed == []  # nothing new after offset 3: both caught up, nothing twice
    assert not clock.getDelayedCalls()
