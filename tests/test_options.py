"""Command line and TOML config: the same keys, the command line wins."""

import os

import pytest
from twisted.python import usage

from exchange_stream.adapters.workers import process_count, usable_cores
from exchange_stream.core.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.options import Options


def parse(*argv) -> GatewayConfig:
    options = Options()
    options.parseOptions(list(argv))
    return options.config


def test_defaults_are_designs():
    config = parse()
    assert config == GatewayConfig()
    assert (config.ws, config.path, config.api) == (
        "tcp:6790",
        "/exchange-stream",
        "tcp:6789:interface=127.0.0.1",
    )
    assert (config.mesh, config.prefix, config.api_token) == ("memory:", "ex:", None)
    assert config.auth_url == "http://127.0.0.1:8000/websocket_auth"


def test_command_line_values_are_typed():
    config = parse("--ws", "tcp:7000", "--max-subscriptions", "10", "--auth-timeout", "1.5")
    assert (config.ws, config.max_subscriptions, config.auth_timeout) == ("tcp:7000", 10, 1.5)


def test_toml_file_with_command_line_overrides(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(
        'ws = "tcp:7001"\nprefix = "venue:"\napi-token = "t0ken"\n'
        "max_subscriptions = 50\nauth-timeout = 2\n"
    )
    config = parse("--config", str(path), "--prefix", "cli:")
    assert config.ws == "tcp:7001"
    assert config.prefix == "cli:"
    assert config.api_token == "t0ken"
    assert config.max_subscriptions == 50
    assert config.auth_timeout == 2.0


@pytest.mark.parametrize(
    "content",
    ['unknown = "x"', "ws = 6790", "max-subscriptions = 1.5", "ws = ", 'path = "no-slash"'],
)
def test_bad_config_files_are_usage_errors(tmp_path, content):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(usage.UsageError):
        parse("--config", str(path))


def test_missing_config_file_and_bad_values_are_usage_errors():
    with pytest.raises(usage.UsageError):
        parse("--config", "/nonexistent/gateway.toml")
    with pytest.raises(usage.UsageError):
        parse("--max-subscriptions", "0")
    with pytest.raises(usage.UsageError):
        parse("--max-subscriptions", "many")


@pytest.mark.parametrize("url", ["kafka://x", "redis://host/db-one", "memcache:"])
def test_bad_mesh_urls_are_usage_errors(url):
    with pytest.raises(usage.UsageError):
        parse("--mesh", url)


def test_redis_mesh_url_is_accepted():
    assert parse("--mesh", "redis://:pw@10.0.0.5:6380/2").mesh == "redis://:pw@10.0.0.5:6380/2"


def test_workers_default_to_one_per_core_with_a_shared_mesh_and_to_one_without():
    cores = usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert process_count(parse()) == 1
    assert process_count(parse("--mesh", "redis://127.0.0.1:6379/0")) == cores
    redis_tls = ("--mesh", "redis://127.0.0.1:6379/0", "--ws", "ssl:6790:privateKey=k.pem")
    assert process_count(parse(*redis_tls)) == 1  # workers would adopt the socket as plain TCP
    with pytest.raises(usage.UsageError, match="plain tcp"):
        parse(*redis_tls, "--workers", "2")
    assert process_count(parse("--mesh", "redis://127.0.0.1:6379/0", "--workers", "1")) == 1
    assert process_count(parse("--workers", "1")) == 1
    with pytest.raises(usage.UsageError, match="workers must be positive"):
        parse("--workers", "0")
    with pytest.raises(usage.UsageError, match="need a mesh they share"):
        parse("--workers", "2")


def test_listening_ports_get_a_backlog_for_reconnect_storms():
    from exchange_stream.core.endpoints import with_backlog

    assert with_backlog("tcp:6790", 4096) == "tcp:6790:backlog=4096"
    assert with_backlog("tcp:6789:interface=127.0.0.1", 4096).endswith(":backlog=4096")
    assert with_backlog("ssl:443:privateKey=k.pem", 100) == "ssl:443:privateKey=k.pem:backlog=100"
    assert with_backlog("tcp:6790:backlog=50", 4096) == "tcp:6790:backlog=50"  # said its own
    assert with_backlog("unix:/run/es.sock", 4096) == "unix:/run/es.sock"
    assert parse("--backlog", "1024").backlog == 1024
    assert parse().backlog == 4096


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("option", ["--auth-timeout", "--ping-interval", "--history-ttl"])
def test_number_options_must_be_finite(option, value):
    """nan passes every "must be positive" comparison: it is refused by name."""
    with pytest.raises(usage.UsageError, match="must be a finite number"):
        Options().parseOptions([option, value])


@pytest.mark.parametrize(
    "api", ["tcp:6789", "tcp:6789:interface=0.0.0.0", "tcp:6789:interface=10.0.0.5", "systemd:0"]
)
def test_an_api_reachable_from_other_hosts_needs_a_token(api):
    with pytest.raises(usage.UsageError, match="--api-token"):
        Options().parseOptions(["--api", api])
    Options().parseOptions(["--api", api, "--api-token", "s3cret"])


@pytest.mark.parametrize(
    "api", ["tcp:6789:interface=127.0.0.1", "tcp6:6789:interface=\\:\\:1", "unix:/tmp/es.sock"]
)
def test_a_local_api_needs_no_token(api):
    Options().parseOptions(["--api", api])


def test_stall_after_reaches_the_redis_meshs_self_check():
    config = parse("--mesh", "redis://127.0.0.1:1", "--stall-after", "7.5")
    assert config.stall_after == 7.5
    mesh = Gateway(config).mesh  # not started: nothing connects
    assert mesh.self_check._stall_after == 7.5
    with pytest.raises(usage.UsageError, match="stall_after must be positive"):
        parse("--stall-after", "0")
