"""The hub's index and the node's mesh subscriptions, driven by hand."""

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.hub import Hub
from exchange_stream.core.publication import Publication
from exchange_stream.interfaces import IMesh
from exchange_stream.services.memory_mesh import MemoryMesh
from exchange_stream.services.node import Node
from tests.support import MemoryClient, Recorder, memory_gateway, subscribe_live


def prepare(payload, binary):
    prepare.calls += 1
    return (payload, binary)


prepare.calls = 0


@implementer(IMesh)
class SlowMesh:
    """A mesh whose subscribe/unsubscribe complete only when the test says so."""

    available = True

    def __init__(self):
        self.calls = []
        self.pending = []

    def publish(self, channel, publication, snapshot=None):
        return succeed(0)

    def snapshot(self, channel):
        return succeed(None)

    def subscribe(self, channel, receiver):
        return self._call("subscribe", channel)

    def unsubscribe(self, channel, receiver):
        return self._call("unsubscribe", channel)

    def _call(self, kind, channel):
        self.calls.append((kind, channel))
        done = Deferred()
        self.pending.append(done)
        return done

    def finish_all(self):
        while self.pending:
            self.pending.pop(0).callback(None)


def test_memory_mesh_provides_the_interface():
    assert verifyObject(IMesh, MemoryMesh())


def test_hub_reports_first_and_last_subscriber():
    hub = Hub(prepare)
    a, b = Recorder(), Recorder()
    assert hub.add(a, "c") is True
    assert hub.add(b, "c") is False
    assert hub.add(b, "c") is False  # twice is once
    assert hub.subscription_count == 2
    assert hub.remove(a, "c") is False
    assert hub.remove(a, "c") is False  # not subscribed any more
    assert hub.remove(b, "c") is True
    assert hub.channel_count == 0 and hub.subscription_count == 0


def add_live(hub, subscriber, channel):
    hub.add(subscriber, channel)
    hub.release(subscriber, channel, None)


def test_fan_out_frames_once_for_all_subscribers():
    hub = Hub(prepare)
    subscribers = [Recorder() for _ in range(50)]
    for subscriber in subscribers:
        add_live(hub, subscriber, "c")
    add_live(hub, Recorder(), "other")
    before = prepare.calls
    assert hub.deliver("c", b"payload") == 50
    assert prepare.calls == before + 1
    assert all(s.frames == [(b"payload", False)] for s in subscribers)
    assert hub.deliver("nobody", b"x") == 0
    assert prepare.calls == before + 1
    assert hub.messages_delivered == 50


def test_held_subscriber_gets_snapshot_first_then_what_arrived_meanwhile():
    hub = Hub(prepare)
    live, new = Recorder(), Recorder()
    add_live(hub, live, "c")
    hub.add(new, "c")
    assert hub.deliver("c", b"m1") == 1
    assert new.frames == []
    hub.release(new, "c", Publication(b"state"))
    hub.deliver("c", b"m2")
    assert new.frames == [(b"state", False), (b"m1", False), (b"m2", False)]
    assert live.frames == [(b"m1", False), (b"m2", False)]
    hub.release(new, "c", Publication(b"again"))  # already live: nothing happens
    assert len(new.frames) == 3
    assert hub.messages_delivered == 5


def test_a_channels_snapshot_is_framed_once_while_it_has_subscribers():
    hub = Hub(prepare)
    first, second, third = Recorder(), Recorder(), Recorder()
    before = prepare.calls
    for subscriber in (first, second):
        hub.add(subscriber, "c")
        hub.release(subscriber, "c", Publication(b"book 1"))
    assert prepare.calls == before + 1  # the second got the same frame
    hub.add(third, "c")
    hub.release(third, "c", Publication(b"book 2"))  # another snapshot: framed again
    assert prepare.calls == before + 2 and third.frames == [(b"book 2", False)]
    for subscriber in (first, second, third):
        hub.remove(subscriber, "c")
    hub.add(first, "c")  # the channel was left empty: nothing of it is kept
    hub.release(first, "c", Publication(b"book 2"))
    assert prepare.calls == before + 3


def test_only_the_last_channels_subscribed_to_keep_their_snapshot_frames():
    hub = Hub(prepare)
    hub.snapshot_frames_kept = 2
    subscribers = [Recorder() for _ in range(4)]
    for subscriber, channel in zip(subscribers, ("a", "b", "c"), strict=False):
        hub.add(subscriber, channel)
        hub.release(subscriber, channel, Publication(channel.encode()))
    before = prepare.calls
    hub.add(subscribers[3], "c")  # kept: one of the last two
    hub.release(subscribers[3], "c", Publication(b"c"))
    assert prepare.calls == before
    hub.add(subscribers[3], "a")  # the oldest, let go: framed again
    hub.release(subscribers[3], "a", Publication(b"a"))
    assert prepare.calls == before + 1


def test_subscriber_that_left_while_held_gets_nothing():
    hub = Hub(prepare)
    gone = Recorder()
    hub.add(gone, "c")
    assert hub.remove(gone, "c") is True
    hub.release(gone, "c", Publication(b"state"))
    assert gone.frames == [] and hub.channel_count == 0


def test_remove_all_returns_emptied_channels_only():
    hub = Hub(prepare)
    a, b = Recorder(), Recorder()
    hub.add(a, "shared")
    hub.add(b, "shared")
    hub.add(a, "mine")
    assert hub.remove_all(a) == ["mine"]
    assert hub.remove_all(a) == []
    assert list(hub.channels()) == ["shared"]


def test_node_holds_a_mesh_subscription_exactly_while_it_has_subscribers():
    mesh = MemoryMesh()
    node = Node(Hub(prepare), mesh)
    a, b = Recorder(), Recorder()
    subscribe_live(node, a, "c")
    subscribe_live(node, b, "c")
    assert mesh.subscribed_channels() == ["c"]
    node.unsubscribe(a, "c")
    assert mesh.subscribed_channels() == ["c"]
    node.drop(b)
    assert mesh.subscribed_channels() == []


def test_publications_reach_every_node_sharing_a_memory_mesh():
    mesh = MemoryMesh()
    nodes = [Node(Hub(prepare), mesh) for _ in range(3)]
    recorders = [Recorder() for _ in nodes]
    for node, recorder in zip(nodes[:2], recorders, strict=False):
        subscribe_live(node, recorder, "c")
    reached = []
    nodes[2].publish("c", Publication(b"hi")).addCallback(reached.append)
    assert [published.nodes for published in reached] == [2]
    assert [r.frames for r in recorders] == [[(b"hi", False)], [(b"hi", False)], []]


def test_subscribe_fires_only_when_the_mesh_subscription_is_in_effect():
    mesh = SlowMesh()
    node = Node(Hub(prepare), mesh)
    fired = []
    node.subscribe(Recorder(), "c").addCallback(lambda _: fired.append("first"))
    node.subscribe(Recorder(), "c").addCallback(lambda _: fired.append("second"))
    assert fired == []
    mesh.finish_all()
    assert sorted(fired) == ["first", "second"]
    assert mesh.calls == [("subscribe", "c")]


def test_churn_while_the_mesh_is_busy_ends_in_the_right_state():
    """Subscribe, leave and come back while a mesh call is in flight: calls are serialised
    per channel and the final mesh state matches the hub, with no duplicate subscribe."""
    mesh = SlowMesh()
    node = Node(Hub(prepare), mesh)
    a = Recorder()
    node.subscribe(a, "c")
    node.unsubscribe(a, "c")
    node.subscribe(a, "c")
    assert mesh.calls == [("subscribe", "c")]
    mesh.finish_all()
    # the channel is wanted again by the time the first call finished: nothing else to do
    assert mesh.calls == [("subscribe", "c")]
    node.drop(a)
    mesh.finish_all()
    assert mesh.calls == [("subscribe", "c"), ("unsubscribe", "c")]
    assert node._locks == {}


def test_a_thousand_clients_that_subscribe_and_leave_leave_nothing_behind(clock):
    """1,000 connections through the real protocol subscribe to shared and own channels, then
    half close cleanly and half lose their TCP connection: the hub, the mesh and the session
    registry end empty (a real-socket version is in test_gateway_e2e.py)."""
    gateway = memory_gateway(clock, GatewayConfig(ping_interval=0, max_connections_per_ip=1000))
    clients = [MemoryClient(gateway, 10_000 + index) for index in range(1000)]
    for index, client in enumerate(clients):
        channels = ["BTCUSDT@depth", f"S{index % 7}@ticker"]
        assert client.request({"op": "subscribe", "channels": channels}) == [{"result": True}]
    hub = gateway.hub
    assert hub.subscriber_count == 1000 and hub.channel_count == 8
    gateway.node.publish("ex:BTCUSDT@depth", Publication(b"{}"))
    assert all(client.messages() == [{}] for client in clients)
    for index, client in enumerate(clients):
        if index % 2:
            client.disconnect()
        else:
            client.send((1000).to_bytes(2, "big"), opcode=0x8)  # a close frame, code 1000
    assert all(client.lost for client in clients)
    assert (hub.subscriber_count, hub.channel_count, hub.subscription_count) == (0, 0, 0)
    assert gateway.mesh.subscribed_channels() == ["es:control"]  # always listened to
    assert len(gateway.sessions) == 0


def test_hundreds_subscribing_during_one_mesh_subscribe_all_get_in_with_it():
    """Subscribers arriving while the channel's mesh subscribe is in flight share the one
    alignment queued behind it; one queued per caller was released recursively, and a few
    hundred of them ran out of stack (a real Redis version is in test_redis_mesh.py)."""
    mesh = SlowMesh()
    node = Node(Hub(prepare), mesh)
    fired = []
    for _ in range(2000):
        node.subscribe(Recorder(), "c").addCallback(fired.append)
    assert fired == []
    mesh.finish_all()
    assert len(fired) == 2000 and mesh.calls == [("subscribe", "c")]
    assert node._locks == {}  # nothing left in flight
