"""Shared fixtures: a fake auth back end and a gateway on free 127.0.0.1 ports."""

import os
import resource
import sys

import pytest
import pytest_twisted
import txaio
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.web.server import Site

from exchange_stream.core.config import GatewayConfig
from tests.support import LOCAL, AuthBackend, start_gateway

# Twisted's log to stderr, which pytest shows for a failing test; removed when the session
# ends so that pytest's summary stays the last line of the run.
_log_to_stderr = textFileLogObserver(sys.stderr)
globalLogPublisher.addObserver(_log_to_stderr)

# Autobahn's timers run on txaio's loop; tie it to Twisted for every test.
txaio.use_twisted()

# Real-socket tests open a few thousand connections; use the whole allowance.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


def pytest_sessionfinish(session, exitstatus):
    """In CI (``CI`` set), a skipped test fails the run: every test must run on a fresh
    machine, so a skip means a missing install step, not an optional extra."""
    globalLogPublisher.removeObserver(_log_to_stderr)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and session.exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; failing the run", red=True)
        session.exitstatus = 1


@pytest_twisted.async_yield_fixture
async def auth_backend():
    backend = AuthBackend()
    backend.user("token-1001", 1001)
    backend.user("token-1002", 1002)
    port = await serverFromString(reactor, LOCAL).listen(Site(backend))
    backend.url = f"http://127.0.0.1:{port.getHost().port}/websocket_auth"
    yield backend
    await port.stopListening()


@pytest.fixture
def gateway_config(auth_backend) -> GatewayConfig:
    return GatewayConfig(auth_url=auth_backend.url, auth_timeout=2.0)


@pytest_twisted.async_yield_fixture
async def running(gateway_config):
    running = await start_gateway(gateway_config)
    yield running
    await running.stop()
