"""The operator files in ``deploy/`` do what deploy/README.md says: the alerting rules pass
promtool's checks and their own unit tests, every metric the rules and the Grafana dashboard
read is one a live gateway exports, and the systemd unit passes ``systemd-analyze`` and starts
the gateway it describes.

promtool (Debian's ``prometheus`` package) and systemd-analyze (``systemd``) are installed by
``.ci/run`` when missing; in CI (``CI`` set) a missing one fails the test, elsewhere it is
skipped with what to install.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from websockets.sync.client import connect

from exchange_stream.options import Options
from tests.redis_server import RedisServer
from tests.support import TWISTD, eventually, free_port, http, real_gateway

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "exchange-stream.json"
UNIT = DEPLOY / "systemd" / "exchange-stream.service"
UNIT_CONFIG = DEPLOY / "systemd" / "exchange-stream.toml"

METRIC = re.compile(r"\bexchange_stream_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(exchange_stream_[a-z0-9_]+)\{([^}]*)\}")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus, not in /metrics
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*", "$job": "exchange-stream"}


def missing(message: str):
    """Fail in CI, where every test must run; skip elsewhere, saying what is missing."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} not found: install Debian's {package} package (.ci/run does)")
    return found


def run(*command: str, cwd: Path | None = None) -> str:
    """Run ``command``; fail with its output unless it exits 0; return that output."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{shlex.join(command)}:\n{output}"
    return output


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def used_texts() -> list[str]:
    """Everything that names a metric: alert expressions and annotations, panel expressions and
    the dashboard's variable queries."""
    texts = [rule["expr"] for rule in alert_rules()]
    texts += [text for rule in alert_rules() for text in rule["annotations"].values()]
    texts += dashboard_expressions()
    texts += [var["definition"] for var in json.loads(DASHBOARD.read_text())["templating"]["list"]
              if var["type"] == "query"]  # fmt: skip
    return texts


def exported(exposition: str) -> dict[str, set[str]]:
    """Series names in a /metrics text, each with the label names its samples carry. A family
    declared without samples yet (a labelled counter before its first event) counts too, and
    a histogram stands for its ``_bucket``, ``_sum`` and ``_count``."""
    names: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            for suffix in suffixes:
                names.setdefault(name + suffix, set())
        elif line and not line.startswith("#"):
            name, _, labels = line.partition("{")
            names.setdefault(name.split()[0], set()).update(re.findall(r'(\w+)="', labels))
    return names


def unknown_names(texts: list[str], exposition: str) -> set[str]:
    """The metric names in ``texts`` that ``exposition`` does not export."""
    names = exported(exposition)
    return {name for text in texts for name in METRIC.findall(text) if name not in names}


def unknown_labels(texts: list[str], exposition: str) -> set[str]:
    """``metric{label}`` for each label a selector in ``texts`` matches on that the metric's
    live samples do not carry (Prometheus's own job and instance aside)."""
    names = exported(exposition)
    unknown = set()
    for text in texts:
        for name, matchers in SELECTOR.findall(text):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                if label not in TARGET_LABELS and label not in names.get(name, set()):
                    unknown.add(f"{name}{{{label}}}")
    return unknown


# -- Prometheus rules ---------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    """``promtool check rules`` accepts alerts.yml and ``promtool test rules`` passes."""
    promtool = tool("promtool", "prometheus")
    assert "SUCCESS" in run(promtool, "check", "rules", str(ALERTS))
    assert "SUCCESS" in run(promtool, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


def test_every_alert_says_how_long_how_bad_and_what_to_do():
    """Each rule is an alert with a ``for``, a severity and a summary and a description."""
    for rule in alert_rules():
        assert {"alert", "expr", "for"} <= rule.keys(), rule
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"].keys() == {"summary", "description"}, rule["alert"]


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    """alerts.test.yml expects each alert of alerts.yml both firing and silent."""
    firing, silent = set(), set()
    for group in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert firing == alerts and silent == alerts


# -- Grafana dashboard --------------------------------------------------------------------


def test_dashboard_panels_are_well_formed_and_their_promql_parses(tmp_path):
    """Unique ids, panels on the 24-column grid, every query on the chosen data source, and
    every expression valid PromQL (promtool checks them as recording rules)."""
    promtool = tool("promtool", "prometheus")
    panels = dashboard_panels()
    assert len({panel["id"] for panel in panels}) == len(panels)
    rules = []
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, (panel["title"], expr)
            rules.append({"record": f"panel_{panel['id']}_{target['refId']}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run(promtool, "check", "rules", str(path))


class AuthHandler(BaseHTTPRequestHandler):
    """An auth back end with one answer of each kind: ``ok`` a uid, ``bad`` 401 (failed), any
    other token 503 (unavailable)."""

    def do_POST(self):
        token = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["token"]
        status = {"ok": 200, "bad": 401}.get(token, 503)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"uid":1001}' if status == 200 else b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory) -> str:
    """/metrics of a gateway showing every family with samples: two processes on a real
    Redis, a market feed fed one bad line, one auth of each outcome, two refused publishes."""
    auth = ThreadingHTTPServer(("127.0.0.1", 0), AuthHandler)
    threading.Thread(target=auth.serve_forever, args=(0.01,), daemon=True).start()
    redis = RedisServer()
    feed = free_port()
    options = ("--workers", "2", "--mesh", redis.url, "--feed", f"tcp:{feed}", "--api-token",
               "t0ken", "--auth-url", f"http://127.0.0.1:{auth.server_address[1]}/")  # fmt: skip
    try:
        with real_gateway(tmp_path_factory.mktemp("live"), *options) as (_, url, api, _):
            with connect(url) as client:
                for token in ("ok", "bad", "down"):
                    client.send(json.dumps({"op": "auth", "token": token}))
                    client.recv(5)
            assert http("POST", f"{api}/v1/mesh/publish", b"{}")[0] == 401  # no token: 102
            with socket.create_connection(("127.0.0.1", feed)) as writer:
                writer.sendall(b"not an event\n")

            def complete() -> str | None:
                text = http("GET", f"{api}/metrics")[1].decode()
                wanted = ('process_up{process="1"}', 'refused_total{reason="malformed"}',
                          'outcome="unavailable"', 'code="102"')  # fmt: skip
                return text if all(part in text for part in wanted) else None

            return eventually(complete)
    finally:
        redis.close()
        auth.shutdown()


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(live_metrics):
    """Each exchange_stream_* name in alerts.yml and the dashboard is in a live /metrics, and
    each label their selectors match on is on that metric's samples."""
    texts = used_texts()
    assert unknown_names(texts, live_metrics) == set()
    assert unknown_labels(texts, live_metrics) == set()


def test_the_dashboard_shows_every_metric_the_gateway_exports(live_metrics):
    """No exported family is missing from the dashboard (the client's ``_created`` aside): a
    new metric needs a panel in deploy/grafana/exchange-stream.json."""
    shown = {name for expr in dashboard_expressions() for name in METRIC.findall(expr)}
    families = {name for name in exported(live_metrics) if not name.endswith("_created")}
    assert families - shown == set()


def test_a_misspelt_metric_or_label_is_caught():
    """The check above reports a name or a label the exposition lacks, and accepts a
    histogram's series and a labelled counter that has no sample yet."""
    exposition = "\n".join([
        "# TYPE exchange_stream_slow_consumers_total counter",
        "exchange_stream_slow_consumers_total 0.0",
        "# TYPE exchange_stream_auth_latency_seconds histogram",
        'exchange_stream_auth_latency_seconds_bucket{le="+Inf"} 0.0',
        "# TYPE exchange_stream_auth_total counter",
        "# TYPE exchange_stream_publish_errors_total counter",
        'exchange_stream_publish_errors_total{code="101"} 1.0',
    ])  # fmt: skip
    good = [
        "rate(exchange_stream_slow_consumers_total[5m])",
        "rate(exchange_stream_auth_latency_seconds_sum[5m])",
        'rate(exchange_stream_auth_total{outcome="ok"}[5m])',
        'rate(exchange_stream_publish_errors_total{code=~"104", instance="a"}[5m])',
    ]
    assert unknown_names(good, exposition) == set()
    assert unknown_labels(good[3:], exposition) == set()
    assert unknown_names(["rate(exchange_stream_slow_consumer_total[5m])"], exposition) == {
        "exchange_stream_slow_consumer_total"
    }
    assert unknown_names(["exchange_stream_auth_latency_second_bucket"], exposition)
    assert unknown_labels(['exchange_stream_publish_errors_total{cdoe="1"}'], exposition) == {
        "exchange_stream_publish_errors_total{cdoe}"
    }


# -- systemd unit -------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    """The unit's ``Key=value`` settings, repeated keys kept in order (as systemd adds them)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def unit_command(credentials: Path, options: list[str]) -> list[str]:
    """ExecStart as systemd runs it, with the installed twistd, ``credentials`` for ``%d``
    and ``options`` for $EXCHANGE_STREAM_OPTIONS."""
    (command,) = unit_settings()["ExecStart"]
    words = shlex.split(command.replace("%d", str(credentials)))
    assert words[0] == "/opt/exchange-stream/bin/twistd"
    assert words.pop() == "$EXCHANGE_STREAM_OPTIONS"
    return [str(TWISTD), *words[1:], *options]


def test_unit_runs_unprivileged_hardened_and_drains_before_it_is_killed(tmp_path):
    """DynamicUser, the hardening options, many file descriptors, a restart on failure, and a
    stop timeout well past the drain the example config sets; ExecStart's gateway options and
    that config are accepted by the real option parser."""
    settings = {key: values[-1] for key, values in unit_settings().items()}
    expected = {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure",
        "KillSignal": "SIGTERM", "KillMode": "mixed",
    }  # fmt: skip
    assert {key: settings.get(key) for key in expected} == expected
    assert "@system-service" in unit_settings()["SystemCallFilter"]
    assert int(settings["LimitNOFILE"]) >= 65536
    assert settings["EnvironmentFile"].startswith("-")  # optional
    shutil.copy(UNIT_CONFIG, tmp_path / "exchange-stream.toml")
    command = unit_command(tmp_path, [])
    assert command[1:4] == ["-n", "--pidfile=", "exchange-stream"]
    options = Options()
    options.parseOptions(command[4:])
    stop_timeout = float(settings["TimeoutStopSec"].removesuffix("s"))
    assert stop_timeout >= options.config.drain_seconds + 2 + 10  # drain, last closes, margin


def test_unit_passes_systemd_analyze_verify_and_security(tmp_path):
    """``systemd-analyze verify`` finds nothing to say (with ExecStart on the installed twistd)
    and ``security`` rates the unit's exposure 2.0 or lower ("OK")."""
    analyze = tool("systemd-analyze", "systemd")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/exchange-stream/bin/twistd", str(TWISTD)))
    assert run(analyze, "verify", str(unit)) == ""
    run(analyze, "security", "--offline=yes", "--threshold=20", str(unit))


# PR_SET_MDWE (Linux 6.3), what MemoryDenyWriteExecute=yes enforces with seccomp: no memory
# that is both writable and executable, for this process and what it execs.
REFUSE_WRITE_EXECUTE = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(66, 0, 0, 0, 0) >= 0  # PR_GET_MDWE


def _healthy(api: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{api}/healthz")[0] == 200
    except OSError:
        time.sleep(0.05)
        return False


def test_the_units_command_starts_a_gateway_that_needs_no_write_execute_memory(
    tmp_path, seed_auth_url
):
    """ExecStart, with the example config as its credential, starts the gateway under the
    kernel's MemoryDenyWriteExecute; a client logs in and gets a publication; SIGTERM stops it
    cleanly."""
    if not mdwe_supported():
        missing("the kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    shutil.copy(UNIT_CONFIG, tmp_path / "exchange-stream.toml")
    ws, api = free_port(), free_port()
    overrides = ["--ws", f"tcp:{ws}:interface=127.0.0.1", "--api",
                 f"tcp:{api}:interface=127.0.0.1", "--auth-url", seed_auth_url]  # fmt: skip
    command = unit_command(tmp_path, overrides)
    log = tmp_path / "journal.log"
    process = subprocess.Popen(
        [sys.executable, "-c", REFUSE_WRITE_EXECUTE, *command],
        cwd="/",  # systemd's working directory, read-only there
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        eventually(lambda: process.poll() is not None or _healthy(api), timeout=20)
        assert process.poll() is None, log.read_text()
        with connect(f"ws://127.0.0.1:{ws}/exchange-stream") as client:
            client.send('{"op":"auth","token":"***"}')
            assert json.loads(client.recv(5)) == {"result": True}
            client.send('{"op":"subscribe","channel":"@balance"}')
            assert json.loads(client.recv(5)) == {"result": True}
            body = json.dumps({"c": "ex:1001@balance", "d": '{"n":1}'}).encode()
            assert http("POST", f"http://127.0.0.1:{api}/v1/mesh/publish", body)[0] == 200
            assert client.recv(5) == '{"n":1}'
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == -signal.SIGTERM  # twistd re-raises it: a clean stop
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in log.read_text()
