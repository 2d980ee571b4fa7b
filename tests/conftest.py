"""Shared fixtures: a fake clock for Autobahn too, auth back ends, a gateway on free 127.0.0.1
ports, the installed ``twistd`` and a throwaway Redis. Plain helpers are in ``support.py``."""

import os
import resource
import shutil
import sys
import sysconfig
import threading
from http.server import ThreadingHTTPServer

import pytest
import pytest_twisted
import txaio
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.web.server import Site

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.market import level_scan
from tests.compiled import BUILD_FAILURE
from tests.redis_server import RedisServer
from tests.support import LOCAL, AuthBackend, SeedAuthHandler, real_gateway, start_gateway

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


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """pytest-twisted wraps a hypothesis test's inner test in place, on the function object
    that the items of a parametrized test share: wrapped twice for the second item, it runs
    inside the reactor's greenlet and fails. Each item starts from the inner test as it was."""
    hypothesis = getattr(pyfuncitem.obj, "hypothesis", None)
    inner = getattr(hypothesis, "inner_test", None)
    yield
    if inner is not None:
        hypothesis.inner_test = inner


@pytest.fixture(scope="module", params=["compiled", "interpreted"])
def level_loops(request):
    """Each test of the module twice: with a book's per-level loops compiled
    (``level_scan.compiled``) and with their Python definitions."""
    if request.param == "compiled" and level_scan.compiled is None:
        if BUILD_FAILURE is not None and shutil.which(sysconfig.get_config_var("CC").split()[0]):
            pytest.fail(f"the C module did not build:\n{BUILD_FAILURE}")
        pytest.skip("no C compiler here: the C module of level_scan is not built")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "interpreted":
            patch.setattr(level_scan, "compiled", None)
        yield request.param


@pytest.fixture
def interpreted(monkeypatch):
    """A book's per-level loops by their Python definitions (``spellings``' memory of
    level pieces, ``depth._Side``), for tests of those definitions themselves."""
    monkeypatch.setattr(level_scan, "compiled", None)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """A fake clock that Autobahn's own timers (txaio's loop: handshake and closing
    timeouts) run on as well, for the length of the test."""
    clock = Clock()
    monkeypatch.setattr(txaio.config, "loop", clock)
    return clock


@pytest_twisted.async_yield_fixture
async def auth_backend():
    """``AuthBackend`` on a real port; ``.url`` is its token endpoint."""
    backend = AuthBackend()
    port = await serverFromString(reactor, LOCAL).listen(Site(backend))
    backend.url = f"http://127.0.0.1:{port.getHost().port}/websocket_auth"
    yield backend
    await port.stopListening()


@pytest.fixture
def gateway_config(auth_backend) -> GatewayConfig:
    return GatewayConfig(auth_url=auth_backend.url, auth_timeout=2.0)


@pytest_twisted.async_yield_fixture
async def running(gateway_config):
    """A gateway on real sockets in this process (``support.RunningGateway``)."""
    running = await start_gateway(gateway_config)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
def seed_auth_url():
    """The seed's auth back end in a thread, for a gateway in another process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SeedAuthHandler)
    # shutdown() waits for serve_forever's next poll: 0.5 s by default
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/websocket_auth"
    server.shutdown()


@pytest.fixture(scope="module")
def twistd_args() -> list[str]:
    """More command-line options for ``twistd_gateway`` (a test module may override it)."""
    return []


@pytest.fixture(scope="module")
def twistd_gateway(tmp_path_factory, seed_auth_url, twistd_args):
    """The installed ``twistd exchange-stream``, one for the test module (its tests only
    connect clients): (WebSocket URL, API base URL, log path)."""
    directory = tmp_path_factory.mktemp("twistd")
    with real_gateway(directory, "--auth-url", seed_auth_url, *twistd_args) as (_, url, api, log):
        yield url, api, log


@pytest.fixture
def redis_server():
    """A throwaway ``redis-server`` on a free port (never the one on 6379)."""
    server = RedisServer()
    yield server
    server.close()
