"""permessage-deflate: bytes and server CPU per delivery, with and without it, beside nchan's.

For each server (exchange-stream as it runs by default, nchan 1.3 with
``nchan_deflate_message_for_websocket on``, both on ``SERVER_CPU``), each payload (``depth``:
a diff of 5 changed levels a side, ~330 bytes; ``trades``: a batch of 1-4 trades, ~250 bytes;
prices and sizes from a seeded generator, different in every message) and each client mode
(``plain``: the clients offer nothing; ``deflate``: they offer permessage-deflate as browsers
do), two load generators, one after the other, on ``LOAD_CPU``:

- Node's ``ws`` (``bench/ws_fanout.mjs``): ``--clients`` subscribers, ``--messages`` publishes
  over HTTP keep-alive with 16 in flight, saturated;
- the ``websockets`` library (asyncio, one process; this file's ``--listen`` mode):
  ``--py-clients`` subscribers (it inflates in Python, so it reads slower: the server is not
  saturated) and the same publishes.

Inflating is the clients' cost, and it limits them (1,000 Node clients inflating each message
read ~13-17k/s on one core, where plain ones read ~120k/s): so both runs are repeated paced
at 80 % of the rate the deflate run reached ("..., paced"), and server CPU is compared there,
at one delivered rate and with the same batching (a saturated server writes many frames per
``send``, a paced one about one).

Columns: delivered/s; server CPU per delivery (utime + stime of the server process over the
run, divided by the deliveries); the bytes the clients' sockets read per delivery (frames,
after the handshakes; counted by each generator itself); and the message's own size.

    NODE_PATH=/path/to/node_modules .venv/bin/python bench/compression.py
    .venv/bin/python bench/compression.py --systems exchange-stream --payloads depth

Needs ``node`` with ``ws@8`` (``npm install ws@8`` in a scratch directory, then ``NODE_PATH``),
``nginx`` and ``libnginx-mod-nchan``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import websockets
from common import (
    BenchmarkError,
    GatewayCode,
    Processes,
    header_line,
    process_cpu_seconds,
    raise_fd_limit,
    read_line,
    run_header,
    table,
)
from nodeload import node_run
from publishers import read_http_response
from systems import LOAD_CPU, ExchangeStream, Nchan, System


class DeflatingNchan(Nchan):
    """nchan keeping a deflated copy of each message for subscribers that negotiated it."""

    def config(self, nginx: str) -> str:
        return (
            super()
            .config(nginx)
            .replace(
                "      nchan_publisher;\n",
                "      nchan_publisher;\n      nchan_deflate_message_for_websocket on;\n",
            )
        )


def python_run(system: System, clients: int, messages: int, kind: str, mode: str) -> dict:
    """The ``websockets`` generator: a child process that subscribes and counts, and the
    publishes sent from here once it is ready."""
    nchan = isinstance(system, Nchan)
    url = f"ws://127.0.0.1:{system.ws_port}{system.sub_path}"
    command = [
        "taskset", "-c", str(LOAD_CPU), sys.executable, __file__, "--listen", url,
        str(clients), str(messages), mode, "nchan" if nchan else "es",
    ]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        if read_line(child.stdout, 120, "the websockets clients").strip() != "ready":
            raise BenchmarkError("the websockets clients did not get ready")
        bodies = list(payloads(kind, messages))
        started = time.monotonic()
        publish_all(system, bodies)
        done = json.loads(read_line(child.stdout, 300, "the websockets clients' count"))
        done["seconds"] = round(time.monotonic() - started, 3)
        done["delivered_per_s"] = round(done["delivered"] / done["seconds"])
        done["message_bytes"] = round(sum(map(len, bodies)) / len(bodies), 1)
        return done
    finally:
        child.kill()
        child.wait()


def publish_all(system: System, bodies: list[str]) -> None:
    """Every body published over one keep-alive connection, 16 requests in flight."""
    port = system.ws_port if isinstance(system, Nchan) else system.api_port
    with socket.create_connection(("127.0.0.1", port)) as sock:
        file = sock.makefile("rb")
        in_flight = 0
        for body in bodies:
            sock.sendall(system.publish_request(body))
            in_flight += 1
            if in_flight == 16:
                read_answer(file)
                in_flight -= 1
        for _ in range(in_flight):
            read_answer(file)


def read_answer(file) -> None:
    status, _ = read_http_response(file)
    if status >= 300:
        raise BenchmarkError(f"a publish was refused with {status}")


def payloads(kind: str, count: int):
    """The same generator as ws_fanout.mjs, in Python: seeded, every message different."""
    state = 20261203

    def random() -> float:
        nonlocal state
        state = (state * 1103515245 + 12345) % 2147483648
        return state / 2147483648

    def price() -> str:
        return f"{64000 + random() * 200:.1f}"

    def qty() -> str:
        return f"{random() * 3:.4f}"

    for seq in range(count):
        if kind == "depth":
            data: object = {
                "type": "update", "seq": seq, "prevSeq": seq - 1, "ts": 1764720000000 + seq * 100,
                "bids": [[price(), qty()] for _ in range(5)],
                "asks": [[price(), qty()] for _ in range(5)],
                "checksum": int(random() * 4294967296) - 2147483648,
            }  # fmt: skip
            event = "BTCUSDT@depth"
        else:
            trades = [
                {"id": 7000000 + seq * 4 + i, "price": price(), "qty": qty(),
                 "side": "buy" if random() < 0.5 else "sell", "ts": 1764720000000 + seq * 100 + i}
                for i in range(1 + int(random() * 4))
            ]  # fmt: skip
            data, event = trades, "BTCUSDT@trades"
        yield json.dumps({"event": event, "data": data}, separators=(",", ":"))


class CountingConnection(websockets.ClientConnection):
    """A ``websockets`` client connection that counts the bytes it reads."""

    bytes_read = 0

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        super().data_received(data)


async def listen(url: str, clients: int, messages: int, mode: str, system: str) -> None:
    raise_fd_limit()
    compression = "deflate" if mode == "deflate" else None
    received = 0
    expected = clients * messages
    finished = asyncio.Event()
    connections = []
    for _ in range(clients):
        ws = await websockets.connect(
            url, compression=compression, max_size=None, ping_interval=None, open_timeout=30,
            create_connection=CountingConnection,
        )  # fmt: skip
        if mode == "deflate" and not ws.protocol.extensions:
            raise SystemExit(f"{system} did not accept permessage-deflate")
        if system == "es":
            await ws.send('{"op":"subscribe","channel":"BTCUSDT@depth"}')
            await asyncio.wait_for(ws.recv(), 30)
        connections.append(ws)

    async def count(ws) -> None:
        nonlocal received
        async for _message in ws:
            received += 1
            if received == expected:
                finished.set()

    readers = [asyncio.create_task(count(ws)) for ws in connections]
    await asyncio.sleep(0.5)  # nchan: subscribed once connected; let the last ones settle
    at_ready = sum(ws.bytes_read for ws in connections)
    print("ready", flush=True)
    await asyncio.wait_for(finished.wait(), 300)
    read = sum(ws.bytes_read for ws in connections) - at_ready
    print(json.dumps({"delivered": received, "bytes_per_delivery": round(read / received, 1)}),
          flush=True)  # fmt: skip
    for reader in readers:
        reader.cancel()


def measured(system: System, run) -> dict:
    pid = system.measured_pid
    cpu = process_cpu_seconds(pid)
    result = run()
    result["server_us"] = (process_cpu_seconds(pid) - cpu) / result["delivered"] * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="exchange-stream,nchan")
    parser.add_argument("--payloads", default="depth,trades")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--py-clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--py-messages", type=int, default=500)
    parser.add_argument("--listen", nargs=5, help=argparse.SUPPRESS)
    GatewayCode.add_options(parser)
    args = parser.parse_args()
    if args.listen:
        url, clients, messages, mode, system = args.listen
        asyncio.run(listen(url, int(clients), int(messages), mode, system))
        return
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as scratch, Processes() as processes:
        code = GatewayCode.chosen(args, Path(scratch))
        print(header_line(run_header(code)), flush=True)
        rows = []
        for name in args.systems.split(","):
            workdir = Path(scratch) / name
            workdir.mkdir()
            kind = ExchangeStream if name == "exchange-stream" else DeflatingNchan
            system = kind(processes, workdir, code)
            system.start()
            try:
                for payload in args.payloads.split(","):
                    runs = {}
                    for mode in ("plain", "deflate"):
                        runs["ws (Node)", mode] = measured(system, partial(
                            node_run, system, args.clients, args.messages, payload, mode,
                        ))  # fmt: skip
                    # Both again, paced a little below the rate deflate reached, so that they
                    # are compared at one delivered rate with the same batching.
                    rate = 0.8 * runs["ws (Node)", "deflate"]["delivered_per_s"] / args.clients
                    for mode in ("plain", "deflate"):
                        runs["ws (Node)", f"{mode}, paced"] = measured(system, partial(
                            node_run, system, args.clients, args.messages, payload, mode, rate,
                        ))  # fmt: skip
                    for mode in ("plain", "deflate"):
                        runs["websockets", mode] = measured(system, partial(
                            python_run, system, args.py_clients, args.py_messages, payload, mode,
                        ))  # fmt: skip
                    for (generator, mode), result in runs.items():
                        rows.append([
                            name, payload, mode, generator, f"{result['delivered']:,}",
                            f"{result['delivered_per_s']:,}", f"{result['server_us']:.2f}",
                            f"{result['bytes_per_delivery']}", f"{result['message_bytes']}",
                        ])  # fmt: skip
                        print(" | ".join(rows[-1]), flush=True)
                problems = system.log_problems()
                if problems:
                    raise BenchmarkError(f"{name} logged errors: {problems[:3]}")
            finally:
                system.stop()
        print(table(
            ["server", "payload", "clients offer", "generator", "delivered", "delivered/s",
             "server µs/delivery", "bytes read/delivery", "message bytes"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
