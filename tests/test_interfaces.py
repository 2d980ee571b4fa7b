"""Every real implementation provides the interface it declares (``verifyObject``)."""

import pytest
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from exchange_stream.adapters.redis_mesh import RedisMesh
from exchange_stream.adapters.workers import WorkerPool
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.hub import Hub
from exchange_stream.gateway import Gateway
from exchange_stream.interfaces import (
    IAuthenticator,
    IClientConnection,
    IHeartbeatPeer,
    IMesh,
    IMeshReceiver,
    IProcessReports,
)
from exchange_stream.services.auth import (
    HttpAuthenticator,
    MeteredAuthenticator,
    StaticAuthenticator,
)
from exchange_stream.services.control_receiver import ControlReceiver
from exchange_stream.services.memory_mesh import MemoryMesh
from exchange_stream.services.node import Node
from exchange_stream.services.selfcheck import SelfCheck
from exchange_stream.testing import FakeAuthenticator, FakeMesh, RecordingConnection


def client_protocol():
    gateway = Gateway(GatewayConfig(), reactor=Clock(), authenticator=StaticAuthenticator({}))
    protocol = gateway.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    protocol.makeConnection(StringTransport())
    return protocol


MESH = MemoryMesh()
IMPLEMENTATIONS = [
    (IMesh, MESH),
    (IMesh, FakeMesh()),
    (IMesh, RedisMesh("redis://127.0.0.1:1/0", reactor=MemoryReactorClock())),
    (IMeshReceiver, Node(Hub(lambda payload, binary: payload), MESH)),
    (IMeshReceiver, ControlReceiver(lambda uid: None)),
    (IMeshReceiver, SelfCheck(MESH, lambda: None, Clock())),
    (IAuthenticator, StaticAuthenticator({"t": 1})),
    (IAuthenticator, HttpAuthenticator("http://auth/", StubTreq(Resource()), Clock())),
    (IAuthenticator, MeteredAuthenticator(StaticAuthenticator({}), lambda *_: None)),
    (IAuthenticator, FakeAuthenticator()),
    (IClientConnection, client_protocol()),
    (IHeartbeatPeer, client_protocol()),
    (IClientConnection, RecordingConnection()),
    (IHeartbeatPeer, RecordingConnection()),
    (IProcessReports, WorkerPool(GatewayConfig(), 2, Clock())),
]


@pytest.mark.parametrize(
    ("interface", "implementation"),
    IMPLEMENTATIONS,
    ids=[f"{i.__name__}-{type(o).__name__}" for i, o in IMPLEMENTATIONS],
)
def test_provides(interface, implementation):
    assert verifyObject(interface, implementation)
