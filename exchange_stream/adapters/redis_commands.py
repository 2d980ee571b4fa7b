"""Running one Redis command or script for the mesh, and saying what a failure means.

What matters to a back end is whether a publish ran: not sent at all (``MeshUnavailable``,
retry freely), or sent without an answer in time (``MeshOutcomeUnknown``: it may have run;
retry with the same idempotency key).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from txredisapi import RedisProtocol, ResponseError

from exchange_stream.adapters.redis_wire import Script
from exchange_stream.adapters.upstream import send_command
from exchange_stream.core.publication import MeshOutcomeUnknown, MeshUnavailable


def encode_command(*words: str | bytes | int) -> bytes:
    """A Redis command in RESP: what txredisapi writes for the same words, made in one join
    (see ``upstream.send_command`` for why it is made here)."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        if isinstance(word, bytes):
            data = word
        elif isinstance(word, str):
            data = word.encode()
        elif isinstance(word, int):
            data = b"%d" % word
        else:
            raise TypeError(f"a Redis command's words are str, bytes or int, not {word!r}")
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True)
class Deadline:
    """How long a command's answer may take, on which clock."""

    seconds: float
    clock: IReactorTime


def execute(
    connection: RedisProtocol,
    deadline: Deadline,
    command: tuple,
    written_matters: bool = False,
    scripted: bool = False,
) -> Deferred:
    """Run one command. Not sent: ``MeshUnavailable``. Sent, but no answer in time or the
    connection lost before it: ``MeshOutcomeUnknown`` when ``written_matters`` (a publish),
    else ``MeshUnavailable``. A reply that does not come in time aborts the connection:
    replies are matched by order, so it cannot be trusted after one is skipped."""
    try:
        reply = send_command(connection, encode_command(*command))
    except Exception as error:  # ConnectionError when not connected
        return fail(MeshUnavailable(str(error)))
    reply.addTimeout(deadline.seconds, deadline.clock)

    def classify(failure: Failure) -> None:
        if failure.check(TimeoutError) and connection.transport is not None:
            connection.transport.abortConnection()
        why = failure.getErrorMessage() or repr(failure.value)
        if scripted and failure.check(ResponseError) and why.startswith("NOSCRIPT"):
            raise _NoScript(why)
        if failure.check(ResponseError):
            raise MeshUnavailable(f"Redis refused it: {why}")  # it did not run
        raise MeshOutcomeUnknown(why) if written_matters else MeshUnavailable(why)

    return reply.addErrback(classify)


def run_script(
    connection: RedisProtocol,
    deadline: Deadline,
    script: Script,
    keys: list[str],
    arguments: tuple,
    written_matters: bool = False,
) -> Deferred:
    """EVALSHA, and EVAL when Redis does not know the script (a restart flushes them)."""
    command = ("EVALSHA", script.sha, len(keys), *keys, *arguments)
    ran = execute(connection, deadline, command, written_matters, scripted=True)

    def unknown_script(failure: Failure) -> Deferred:
        failure.trap(_NoScript)
        whole = ("EVAL", script.source, len(keys), *keys, *arguments)
        return execute(connection, deadline, whole, written_matters)

    return ran.addErrback(unknown_script)


class _NoScript(Exception):
    """Redis does not have the script (yet, or any more): send it whole."""
