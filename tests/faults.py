"""Fault injection for the Redis mesh tests: steady publish traffic with its answers, clients
that record what they receive, and a TCP proxy between a node and Redis that can stop
forwarding Redis's replies to that node's subscriber connection."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.protocols import portforward

from tests.support import publish


class Traffic:
    """Publishes ``{"event":...,"data":{"n":i}}`` on one channel through a node's API, at a
    steady rate, and keeps every answer: 200 (accepted), 504 (outcome unknown), others."""

    def __init__(self, api_port: int, channel: str, rate: float) -> None:
        self._api_port = api_port
        self._channel = channel
        self._interval = 1.0 / rate
        self.accepted: list[int] = []
        self.offsets: dict[int, tuple[str, int]] = {}  # n -> (epoch, offset) when accepted
        self.unknown: list[int] = []
        self.refused: list[int] = []
        self._sent = 0
        self._pending: list[Deferred] = []

    async def run(self, seconds: float) -> None:
        for _ in range(int(seconds / self._interval)):
            self._pending.append(Deferred.fromCoroutine(self._one(self._sent)))
            self._sent += 1
            await deferLater(reactor, self._interval, lambda: None)
        await gatherResults(self._pending)

    async def _one(self, n: int) -> None:
        data = json.dumps({"event": "trades", "data": {"n": n}})
        try:
            status, answer = await publish(self._api_port, {"c": self._channel, "d": data})
        except Exception:  # the API itself unreachable: nothing was accepted
            status, answer = 0, {}
        if status == 200:
            self.accepted.append(n)
            self.offsets[n] = (answer["r"]["epoch"], answer["r"]["offset"])
        elif status == 504:
            self.unknown.append(n)
        else:
            self.refused.append(n)


async def recording_clients(node, channel: str, count: int) -> list[list[int]]:
    """``count`` clients of ``node`` subscribed to ``channel``; each list fills with the
    ``n`` of every push it receives, in order."""
    received: list[list[int]] = []
    for _ in range(count):
        client = await node.connect()
        assert await client.request({"op": "subscribe", "channel": channel}) == {"result": True}
        numbers: list[int] = []
        received.append(numbers)

        def record(frame, numbers=numbers, client=client):
            payload, _ = frame
            push = json.loads(payload)
            if push.get("event") == "trades":  # not the drain's notice at the end
                numbers.append(push["data"]["n"])
            client.received.get().addCallback(record, numbers, client)

        client.received.get().addCallback(record)
    return received


def check_every_subscriber(received: list[list[int]], traffic: Traffic) -> None:
    """Every subscriber got every accepted publish, once each, in the order of their
    offsets; nothing else but publishes whose outcome was unknown. (Publishes travel on
    several HTTP connections, so their offsets need not follow ``n``.)"""
    allowed = set(traffic.accepted) | set(traffic.unknown)
    epochs = list(dict.fromkeys(epoch for epoch, _ in traffic.offsets.values()))
    for numbers in received:
        assert len(numbers) == len(set(numbers)), "a duplicate"
        positions = [traffic.offsets[n] for n in numbers if n in traffic.offsets]
        ordered = [(epochs.index(epoch), offset) for epoch, offset in positions]
        assert ordered == sorted(ordered), "out of offset order"
        missing = sorted(set(traffic.accepted) - set(numbers))
        assert not missing, f"{len(missing)} accepted publishes never arrived: {missing[:10]}"
        assert set(numbers) <= allowed


def delivered_everything(received: list[list[int]], traffic: Traffic) -> bool:
    wanted = set(traffic.accepted)
    return all(wanted <= set(numbers) for numbers in received)


class _RedisSide(portforward.ProxyClient):
    def dataReceived(self, data: bytes) -> None:
        if self.peer.subscriber and self.peer.factory.stalled:
            return  # Redis's messages for this node go nowhere: the node hears nothing
        super().dataReceived(data)


class _RedisSideFactory(portforward.ProxyClientFactory):
    protocol = _RedisSide


class _NodeSide(portforward.ProxyServer):
    """One node connection through the proxy; the one that SUBSCRIBEs is a subscriber."""

    clientProtocolFactory = _RedisSideFactory
    subscriber = False

    def dataReceived(self, data: bytes) -> None:
        if b"SUBSCRIBE" in data.upper():
            self.subscriber = True
        super().dataReceived(data)


class StallingProxy(portforward.ProxyFactory):
    """Twisted's TCP port forwarder to Redis; while ``stalled``, what Redis sends a
    subscriber connection is dropped (a network that stopped delivering in one direction),
    commands still flow."""

    protocol = _NodeSide

    def __init__(self, redis_port: int) -> None:
        super().__init__("127.0.0.1", redis_port)
        self.stalled = False
        self.listening = None  # (``port`` is Redis's: the forwarder's target)

    async def listen(self) -> str:
        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        self.listening = await endpoint.listen(self)
        return f"redis://127.0.0.1:{self.listening.getHost().port}/0"

    async def close(self) -> None:
        await self.listening.stopListening()
