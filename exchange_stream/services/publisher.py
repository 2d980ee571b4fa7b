"""Sends checked publish requests into the node and answers them in CONNMIX's shape.

Both carriers of the internal API (the HTTP resource and the ``/ws/v1`` WebSocket) call the
same :class:`Publisher`, so a publish means the same whichever way it came. Nothing accepted
is dropped silently: a refusal says whether anything was sent.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_stream.core.channels import subscribable
from exchange_stream.core.control import RESERVED_PREFIX
from exchange_stream.core.mesh_api import (
    ApiError,
    PublishRequest,
    combined,
    draining,
    internal_error,
    mesh_unavailable,
    outcome_unknown,
    sent,
)
from exchange_stream.core.publication import MeshOutcomeUnknown, MeshUnavailable, Published
from exchange_stream.services.metrics import GatewayMetrics
from exchange_stream.services.node import Node

log = Logger()


class Publisher:
    """Publishes through ``node`` while the mesh is available and the node is not draining;
    ``prefix`` is the client channels' (to tell a back end that misspells them)."""

    def __init__(
        self,
        node: Node,
        is_draining: Callable[[], bool],
        metrics: GatewayMetrics,
        prefix: str = "ex:",
    ):
        self._node = node
        self._is_draining = is_draining
        self._metrics = metrics
        self._prefix = prefix
        self._unheard_count = 0
        self._unsubscribable_count = 0

    LOG_UNHEARD_EVERY = 1000

    def refusal(self) -> ApiError | None:
        """Why nothing can be published now, if so (checked before reading a request)."""
        if self._is_draining():
            return draining()
        if not self._node.mesh.available:
            return mesh_unavailable()
        return None

    def publish_all(self, requests: list[PublishRequest], batch: bool) -> Deferred:
        """Publish one request, or a batch in order; fires with ``(status, answer)`` and never
        fails. A batch answers 200 with every item's ``r``, or the status and ``E`` of its
        first failed item beside every item's answer (so the back end retries only those).

        One callback per publish, and one per batch: at tens of thousands of publishes a
        second, each further Deferred link per item is a measurable share of the cost."""
        refusal = self.refusal()
        if refusal is not None:  # one refused request, counted once, whatever its size
            self.count_error(refusal)
            answer = (refusal.status, refusal.answer())
            return succeed(combined([answer] * len(requests)) if batch else answer)
        node = self._node
        outcomes = [node.publish(r.channel, r.publication, r.snapshot, r.key) for r in requests]
        if not batch:
            channel = requests[0].channel
            return outcomes[0].addCallbacks(self._accepted, self._refused, (channel,))
        answered = DeferredList(outcomes, consumeErrors=True)
        return answered.addCallback(self._batch_answer, [r.channel for r in requests])

    def count_error(self, error: ApiError) -> None:
        self._metrics.publish_errors.labels(str(error.code)).inc()

    def _accepted(self, published: Published, channel: str) -> tuple[int, dict]:
        self._metrics.published.inc()
        status, answer = sent(published)
        if not published.nodes:
            self._unheard(channel, answer["r"])
        return status, answer

    def _unheard(self, channel: str, result: dict) -> None:
        """A publish no node listens to: fine for a channel nobody watches now, a mistake for
        a misspelt one (no ``ex:`` prefix, a lower-case symbol). Counted; the first and then one
        in ``LOG_UNHEARD_EVERY`` logged with its channel: at debug level, or as a warning when
        no client could ever subscribe to it, and then its ``result`` (the answer's ``r``)
        gets a ``hint`` saying so, for the back end's developer."""
        self._metrics.unheard.inc()
        if not subscribable(channel, self._prefix) and not channel.startswith(RESERVED_PREFIX):
            result["hint"] = (
                f"no client can subscribe to {channel}: client channels are "
                f"{self._prefix}<SYMBOL>@<type> and {self._prefix}<uid>@<type>"
            )
            self._unsubscribable_count += 1
            if self._unsubscribable_count % self.LOG_UNHEARD_EVERY == 1:
                log.warn(
                    "publish to {channel}: no client can subscribe to it (client channels "
                    "are {prefix}<SYMBOL>@<type> and {prefix}<uid>@<type>); {count} such so far",
                    channel=channel,
                    prefix=self._prefix,
                    count=self._unsubscribable_count,
                )
            return
        self._unheard_count += 1
        if self._unheard_count % self.LOG_UNHEARD_EVERY == 1:
            log.debug(
                "publish to {channel} reached no node ({count} such so far)",
                channel=channel,
                count=self._unheard_count,
            )

    def _refused(self, failure: Failure) -> tuple[int, dict]:
        error: ApiError
        if isinstance(failure.value, ApiError):
            error = failure.value
        elif failure.check(MeshUnavailable):
            error = mesh_unavailable()
        elif failure.check(MeshOutcomeUnknown):
            error = outcome_unknown()
        else:
            log.failure("publish failed", failure)
            error = internal_error()
        self.count_error(error)
        return error.status, error.answer()

    def _batch_answer(
        self, outcomes: list[tuple[bool, Published | Failure]], channels: list[str]
    ) -> tuple[int, dict]:
        # DeferredList: (True, Published) for a publish accepted, (False, failure) for one refused.
        answers = [
            self._refused(value) if isinstance(value, Failure) else sent(value)
            for _, value in outcomes
        ]
        published = sum(ok for ok, _ in outcomes)
        if published:
            self._metrics.published.inc(published)
        for (_, value), channel, (_, answer) in zip(outcomes, channels, answers, strict=True):
            if isinstance(value, Published) and not value.nodes:
                self._unheard(channel, answer["r"])
        return combined(answers)
