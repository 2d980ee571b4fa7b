"""What the Redis mesh keeps in Redis, and how (docs/scaling.md documents it for back ends
that publish straight to Redis).

A message body is the payload, sent to clients as a text frame, unless it starts with a NUL
byte: then the next byte says what follows, ``t`` (text) or ``b`` (a binary frame), or ``o``:
a stream publication's position, ``<epoch> <offset>\\n``, then the body as before.

A channel's keys share one hash tag, ``{<channel>}``, so that they live in one slot of a
Redis Cluster and one script can write them all:

- ``es:{<channel>}:snapshot``: the body kept for new subscribers;
- ``es:{<channel>}:meta``: a hash, ``e`` the epoch and ``s`` the offset of the latest
  publication (stream channels);
- ``es:{<channel>}:stream``: a Redis Stream, one entry per publication, its ID
  ``<offset>-0``, with fields ``d`` (the body) and ``t`` (Redis's time, in ms);
- ``es:{<channel>}:key:<k>``: a publish's answer, kept for its idempotency key ``k``.

Two scripts do every write and every read of a history: a publication, its snapshot, its
history entry and its PUBLISH happen in one step, so offset order is delivery order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from exchange_stream.core.publication import Publication, Published
from exchange_stream.core.streams import History, Position


def encode_wire(publication: Publication) -> bytes:
    """A publication's body, without its position (see the module docstring)."""
    if publication.binary:
        return b"\x00b" + publication.payload
    if publication.payload[:1] == b"\x00":
        return b"\x00t" + publication.payload
    return publication.payload


def decode_wire(body: bytes) -> Publication:
    if body[:1] != b"\x00":
        return Publication(body)
    kind = body[1:2]
    if kind == b"o":
        header, _, rest = body[2:].partition(b"\n")
        epoch, _, offset = header.partition(b" ")
        inner = decode_wire(rest)
        return Publication(inner.payload, inner.binary, epoch.decode(), int(offset))
    return Publication(body[2:], binary=kind == b"b")


def key(channel: str, kind: str) -> str:
    return f"es:{{{channel}}}:{kind}"


PUBLISH_SCRIPT = """
-- KEYS: meta, stream, snapshot, idempotency key (all of one channel's slot)
-- ARGV: channel, body, snapshot body or '', stream '1'/'0', size, ttl s, new epoch,
--       idempotency key given '1'/'0', idempotency ttl s
if redis.replicate_commands then redis.replicate_commands() end  -- TIME, before Redis 7
if ARGV[8] == '1' then
  local answer = redis.call('GET', KEYS[4])
  if answer then return {'seen', answer} end
end
local epoch, offset, message = '', 0, ARGV[2]
if ARGV[4] == '1' then
  epoch = redis.call('HGET', KEYS[1], 'e')
  if not epoch then
    epoch = ARGV[7]
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  end
  offset = redis.call('HINCRBY', KEYS[1], 's', 1)
  local now = redis.call('TIME')
  local ms = now[1] * 1000 + math.floor(now[2] / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-0', 'd', ARGV[2], 't', ms)
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  message = '\\0o' .. epoch .. ' ' .. offset .. '\\n' .. ARGV[2]
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3]) end
local nodes = redis.call('PUBLISH', ARGV[1], message)
local answer = nodes .. ' ' .. epoch .. ' ' .. offset
if ARGV[8] == '1' then redis.call('SET', KEYS[4], answer, 'EX', ARGV[9]) end
return {'new', answer}
"""

HISTORY_SCRIPT = """
-- KEYS: meta, stream. ARGV: since epoch or '', since offset, new epoch, ttl s,
--       publications wanted '1'/'0'
local epoch = redis.call('HGET', KEYS[1], 'e')
local top = redis.call('HGET', KEYS[1], 's')
if not epoch then
  epoch, top = ARGV[3], '0'
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
if ARGV[5] == '0' then return {epoch, top} end
local from = '-'
if ARGV[1] == epoch then from = '(' .. ARGV[2] .. '-0' end
local now = redis.call('TIME')
return {epoch, top, redis.call('XRANGE', KEYS[2], from, '+'), now[1]}
"""


@dataclass(frozen=True)
class Script:
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


PUBLISH = Script(PUBLISH_SCRIPT)
HISTORY = Script(HISTORY_SCRIPT)


def published(reply: list) -> Published:
    """The publish script's answer (a first publish, or the one its key remembers)."""
    nodes, epoch, offset = reply[1].decode().split(" ")
    return Published(int(nodes), epoch or None, int(offset) or None)


def _entry(entry_id: bytes, fields: list, epoch: str | None) -> tuple[int, Publication]:
    """(Redis's time in ms, the publication) of one stream entry."""
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    offset = int(entry_id.split(b"-")[0])
    inner = decode_wire(values[b"d"])
    return int(values[b"t"]), Publication(inner.payload, inner.binary, epoch, offset)


def recent(reply: list) -> list[Publication]:
    """XREVRANGE's entries, oldest first (their epoch is not read: charts need none)."""
    return [_entry(entry_id, fields, None)[1] for entry_id, fields in reversed(reply)]


def history(reply: list, since: Position | None, ttl: float, catching_up: bool) -> History:
    """The history script's answer as a :class:`History`.

    For a client's resume (``catching_up`` False) the publications are given only when
    ``since`` can be served: the same epoch, the next offset still held and younger than
    ``ttl``. For a node catching up they are whatever the history holds after ``since`` (all
    of a new epoch when the epoch changed): it passes on what it can and counts the rest."""
    epoch, top = reply[0].decode(), int(reply[1])
    position = Position(epoch, top)
    if since is None or len(reply) < 4:
        return History(position)
    now_ms = int(reply[3]) * 1000
    entries = [_entry(entry_id, fields, epoch) for entry_id, fields in reply[2]]
    if catching_up:
        return History(position, [publication for _, publication in entries])
    if since.epoch != epoch or not 0 <= since.offset <= top:
        return History(position, None)
    if since.offset < top:
        first_ms, first = entries[0] if entries else (0, None)
        if first is None or first.offset != since.offset + 1 or first_ms < now_ms - ttl * 1000:
            return History(position, None)
    return History(position, [publication for _, publication in entries])
