"""The documentation's examples, run as written (issue 12, item 9).

Every fenced block that a ``<!-- example: NAME -->`` comment precedes in README.md or docs/*.md
is read from the markdown and run here against a real gateway on real sockets on free ports: a
fresh gateway in this process for a WebSocket transcript or a publish (protocol.md, api.md), the
installed ``twistd`` where the docs start one (README.md, running.md, market.md), Node for
client.md. So an example edited without its test, or a behaviour changed under an example,
fails; every marked block has a test and every test's block is marked.

How a block is read:

- **Transcripts.** ``> X`` is sent as one text frame; ``< Y`` is the next frame received
  (``< (binary frame) b'...'``: a binary one). Other lines (``$ python -m websockets ...``,
  ``Connected to ...``) are the stock client's own. ``> A ... B`` sends A, the ops between and
  B, counting ``id`` up. A push that a back end would publish meanwhile (a ``<`` line with an
  ``event``) is published by the test just before it is awaited, as the example says.
- **Notes** in brackets at the end of a line: ``(T s)`` or ``(after T s)`` on a received line
  is when it arrived, in seconds after the connection opened (tolerance -0.25/+0.75 s), and an op
  sent alone between two received lines waits for its answer's T; ``then ids A to B`` repeats
  the line for those ids. Other notes (``(logged in as 1001)``) say how the example's connection
  was set up, which its test does.
- **Console blocks.** Each ``$ command`` runs in bash, in a fresh directory, with the installed
  package's ``bin`` first on PATH (that directory is left out of the output compared, as the
  docs write ``twistd``); the lines after it, up to the next ``$``, are its output (``curl -i``'s
  headers trimmed to the status line and ``Content-Type``, as api.md says). A command ending in
  ``&`` starts in the background and is stopped at the end.
- **Ports.** The documented ports, 6789 (API), 6790 (WebSocket), 8000 (auth back end), 7001
  (feed), 8080 and 8081 (an embedding application's), are replaced with free ones in commands,
  scripts and URLs; a gateway an example starts also gets ``--ws`` and ``--api`` on those free
  ports (and ``--auth-url`` when the example starts its own auth back end). A foreground command
  gets 20 s.
- **Placeholders**, the values that change per run: ``ts``, ``t`` and ``epoch`` match any value
  of the same JSON type, but an ``epoch`` written twice in one example must be the same epoch
  both times, and a frame or command sent later with the documented epoch is sent with the real
  one. Everything else is compared exactly, object keys in their order.
- **A live market** (``--demo``): ``...`` elides object members and list items; below ``data``
  the values are the simulated market's, so they match by JSON type; other channels' pushes in
  between are skipped.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from exchange_stream.core.config import GatewayConfig
from tests.redis_server import RedisServer
from tests.support import (
    LOCAL,
    client_frame,
    connect,
    free_port,
    handshake_request,
    http_client,
    server_frames,
    start_gateway,
    until,
)

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
MARKER = re.compile(r"<!-- example: ([a-z0-9-]+) -->")
DOCUMENTED_PORTS = {
    "api": 6789,
    "ws": 6790,
    "auth": 8000,
    "feed": 7001,
    "web": 8080,
    "internal": 8081,
}
PER_RUN = {"ts", "t", "epoch"}
EARLY, LATE = 0.25, 0.75  # tolerance of a timed line, in seconds


# -- the blocks, from the markdown -------------------------------------------------------


@dataclass(frozen=True)
class Block:
    name: str
    where: str  # file:line of the marker
    text: str


def marked_blocks() -> dict[str, Block]:
    """Every ``<!-- example: NAME -->`` of the documents, with the fenced block after it."""
    blocks: dict[str, Block] = {}
    for document in DOCUMENTS:
        lines = document.read_text().splitlines()
        for number, line in enumerate(lines):
            found = MARKER.fullmatch(line.strip())
            if not found:
                continue
            where = f"{document.relative_to(ROOT)}:{number + 1}"
            assert found.group(1) not in blocks, f"{where}: {found.group(1)} is marked twice"
            fence = lines[number + 1]
            assert fence.lstrip().startswith("```"), f"{where}: no fenced block after the marker"
            indent = len(fence) - len(fence.lstrip())
            end = next(i for i in range(number + 2, len(lines)) if lines[i].strip() == "```")
            body = "\n".join(text[indent:] for text in lines[number + 2 : end])
            blocks[found.group(1)] = Block(found.group(1), where, body)
    return blocks


BLOCKS = marked_blocks()


def block(name: str) -> Block:
    assert name in BLOCKS, f"no <!-- example: {name} --> in README.md or docs/"
    return BLOCKS[name]


def test_every_marked_example_has_a_test_and_every_test_its_example():
    """The markers in the docs and the examples this module runs are the same set."""
    used = set(re.findall(r'block\("([a-z0-9-]+)"\)', Path(__file__).read_text()))
    assert set(BLOCKS) == used, (
        f"marked but not run: {sorted(set(BLOCKS) - used)}; "
        f"run but not marked: {sorted(used - set(BLOCKS))}"
    )


def with_ports(text: str, ports: dict[str, int]) -> str:
    """The example's documented ports replaced with this run's."""
    for name, port in ports.items():
        text = re.sub(rf"\b{DOCUMENTED_PORTS[name]}\b", str(port), text)
    return text


# -- comparing, with placeholders --------------------------------------------------------


class Pairs(list):
    """A JSON object as its (key, value) pairs, in order."""


def load(text: str):
    return json.loads(text, object_pairs_hook=Pairs)


def unelided(text: str) -> str:
    """A live example's JSON without its ``...`` (what may follow is not compared)."""
    return re.sub(r",\s*\.\.\.\s*(?=[}\]])", "", text)


def mismatch(expected, actual, binding: dict, key=None, loose=False, live=False) -> str | None:
    """Why ``actual`` (decoded) is not what the docs show, or None."""
    if key in PER_RUN or (loose and not isinstance(expected, Pairs | list)):
        if type(expected) is not type(actual):
            return f"{key}: {actual!r} is not of the type of {expected!r}"
        if key == "epoch" and not loose:
            bound = binding.setdefault(expected, actual)
            if bound != actual:
                return f"epoch {expected!r} stood for {bound!r} before, now {actual!r}"
        return None
    if isinstance(expected, Pairs):
        if not isinstance(actual, Pairs):
            return f"{actual!r} is not an object like {expected!r}"
        keys, actual_keys = [k for k, _ in expected], [k for k, _ in actual]
        if live:
            rest = iter(actual_keys)
            in_order = all(k in rest for k in keys)  # a subsequence: the rest is elided
        else:
            in_order = keys == actual_keys
        if not in_order:
            return f"keys {actual_keys} where the docs have {keys}"
        values = dict(actual)
        for name, value in expected:
            why = mismatch(value, values[name], binding, name, loose or (live and name == "data"),
                           live)  # fmt: skip
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{actual!r} is not a list like {expected!r}"
        if len(actual) < len(expected) or (len(actual) != len(expected) and not live):
            return f"{len(actual)} items where the docs have {len(expected)}: {actual!r}"
        for item, actual_item in zip(expected, actual, strict=False):
            why = mismatch(item, actual_item, binding, None, loose, live)
            if why:
                return why
        return None
    if type(expected) is not type(actual) or expected != actual:
        return f"{actual!r} where the docs have {expected!r}"
    return None


def segments(text: str) -> list:
    """Text and the JSON values in it, in order: ``'{"E":null} 400'`` is
    ``[Pairs(...), ' 400']``."""
    decoder = json.JSONDecoder(object_pairs_hook=Pairs)
    parts: list = []
    plain, position = "", 0
    while position < len(text):
        if text[position] in "{[":
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                pass
            else:
                parts.extend([plain] if plain else [])
                parts.append(value)
                plain, position = "", end
                continue
        plain += text[position]
        position += 1
    return parts + ([plain] if plain else [])


def assert_output(expected: str, actual: str, binding: dict, where: str) -> None:
    """Text compared exactly (ends of lines stripped), JSON values in it with placeholders."""
    tidy = lambda text: "\n".join(line.rstrip() for line in text.strip().splitlines())  # noqa: E731
    wanted, got = segments(tidy(expected)), segments(tidy(actual))
    problem = None if len(wanted) == len(got) else "not the same shape"
    for part, actual_part in zip(wanted, got, strict=False):
        if problem:
            break
        if isinstance(part, str) or isinstance(actual_part, str):
            problem = None if part == actual_part else f"{actual_part!r} instead of {part!r}"
        else:
            problem = mismatch(part, actual_part, binding)
    assert problem is None, f"{where}: {problem}\n--- docs:\n{expected}\n--- got:\n{actual}"


def bind(text: str, binding: dict) -> str:
    """A documented epoch in something sent later stands for the real one."""
    for documented, actual in binding.items():
        if isinstance(documented, str):
            text = text.replace(documented, actual)
    return text


# -- transcripts ----------------------------------------------------------------------------


@dataclass
class Line:
    sent: bool
    text: str | None  # a text frame (None: binary)
    data: bytes | None = None  # a binary frame
    at: float | None = None  # the note's time, s after the connection opened
    note: str = ""

    @property
    def push(self) -> bool:
        return self.text is None or self.text.startswith('{"event":')


def transcript(text: str) -> list[Line]:
    lines: list[Line] = []
    for raw in text.splitlines():
        if raw[:2] not in ("> ", "< "):
            continue
        sent, rest = raw.startswith(">"), raw[2:].strip()
        if rest.startswith("(binary frame) "):
            lines.append(Line(sent, None, ast.literal_eval(rest.split(" ", 2)[2])))
            continue
        noted = re.fullmatch(r"(.*?)\s+\(([^()]*)\)", rest)
        body, note = (noted.group(1), noted.group(2)) if noted else (rest, "")
        timed = re.search(r"(\d+(?:\.\d+)?) s\b", note)
        at = float(timed.group(1)) if timed else None
        first, _, last = body.partition(" ... ")
        ids: list[int | None] = [None]
        if last:  # > A ... B: A, the ops between, B
            ids = list(range(dict(load(first))["id"], dict(load(last))["id"] + 1))
        elif repeat := re.search(r"then ids (\d+) to (\d+)", note):
            ids = [dict(load(first))["id"], *range(int(repeat.group(1)), int(repeat.group(2)) + 1)]
        for each in ids:
            frame = first if each is None else re.sub(r'"id":\d+', f'"id":{each}', first)
            lines.append(Line(sent, frame, None, at, note))
    return lines


async def sleep(seconds: float) -> None:
    await deferLater(reactor, max(0.0, seconds), lambda: None)


async def play(client, text: str, where: str, binding: dict | None = None, *, opened=None,
               pushed=None, live: bool = False) -> dict:  # fmt: skip
    """Run a transcript on ``client`` (``support.Client``); ``pushed(line)`` publishes what a
    back end would before a push is awaited. Returns the binding of the placeholders."""
    binding = {} if binding is None else binding
    opened = reactor.seconds() if opened is None else opened
    lines = transcript(text)
    assert lines, f"{where}: no > or < line"
    for index, line in enumerate(lines):
        if line.sent:
            before = lines[index - 1] if index else None
            after = lines[index + 1] if index + 1 < len(lines) else None
            alone = before and not before.sent and after and not after.sent
            if alone and after.at is not None and not after.push:
                await sleep(opened + after.at - reactor.seconds())  # at its answer's time
            client.send(bind(line.text, binding))
            continue
        if line.push and pushed is not None:
            await pushed(line)
        while True:
            try:
                payload, binary = await client.next_raw(timeout=30 if live else 10)
            except Exception as error:
                raise AssertionError(f"{where}: nothing came for {line.text}") from error
            if not live or (not binary and _like(line, payload)):
                break
        arrived = reactor.seconds() - opened
        if line.text is None:
            assert (binary, payload) == (True, line.data), f"{where}: {payload!r}"
            continue
        assert not binary, f"{where}: a binary frame {payload!r} for {line.text}"
        expected = unelided(line.text) if live else line.text
        try:
            actual = load(payload)
        except ValueError:
            raise AssertionError(f"{where}: {payload!r} is not JSON ({line.text})") from None
        why = mismatch(load(expected), actual, binding, live=live)
        assert why is None, f"{where}: {why}\n  docs: {line.text}\n  got:  {payload.decode()}"
        if line.at is not None:
            assert line.at - EARLY <= arrived <= line.at + LATE, (
                f"{where}: {line.text} came after {arrived:.2f} s, not {line.at} s"
            )
    return binding


def _like(line: Line, payload: bytes) -> bool:
    """In a live market: the frame is the one awaited (an answer, or a push of its channel)."""
    message = json.loads(payload)
    expected = json.loads(unelided(line.text)) if line.text else {}
    if not isinstance(message, dict) or "event" not in message:
        return "event" not in expected
    return message["event"] == expected.get("event")


def publisher(api_port: int, uid: int = 1001, when=lambda line: True):
    """A ``pushed`` hook: publishes the awaited push's text (without the offset the gateway
    adds) to its internal channel, as a back end does."""

    async def pushed(line: Line) -> None:
        if not when(line):
            return
        event = json.loads(line.text)["event"]
        channel = f"ex:{uid}{event}" if event.startswith("@") else f"ex:{event}"
        data = re.sub(r',"offset":\d+}$', "}", line.text)
        status, answer = await post(api_port, "/v1/mesh/publish", {"c": channel, "d": data})
        assert status == 200, answer

    return pushed


# -- console blocks -------------------------------------------------------------------------


@dataclass
class Command:
    line: str
    output: str


def console(text: str, prompt: str = "$ ") -> list[Command]:
    """The commands of a console block (``$ `` first, with their continuation lines and
    here-documents) and the output shown after each; with ``prompt=""``, of a script."""
    commands: list[Command] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not prompt and not lines[index].strip():
            index += 1  # a blank line between a script's commands
            continue
        assert lines[index].startswith(prompt), f"output before any command: {lines[index]!r}"
        command = lines[index][len(prompt) :]
        while not _complete(command):
            index += 1
            command += "\n" + lines[index]
        if heredoc := re.search(r"<<'?(\w+)'?", command):
            while lines[index] != heredoc.group(1):
                index += 1
                command += "\n" + lines[index]
        index += 1
        output = []
        while prompt and index < len(lines) and not lines[index].startswith(prompt):
            output.append(lines[index])
            index += 1
        commands.append(Command(command, "\n".join(output)))
    return commands


def _complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def trimmed(output: str) -> str:
    """``curl -i``'s answer with the status line and Content-Type only, as api.md shows it."""
    output = output.replace("\r\n", "\n").replace(f"{BIN}/", "")
    if not output.startswith("HTTP/"):
        return output
    head, _, body = output.partition("\n\n")
    kept = [line for line in head.splitlines()[1:] if line.lower().startswith("content-type:")]
    return "\n".join([head.splitlines()[0], *kept, "", body])


@dataclass
class Shell:
    """Runs an example's commands in ``directory``: in the foreground with bash, or in the
    background (a trailing ``&``) as processes stopped by ``stop``."""

    directory: Path
    ports: dict[str, int]
    binding: dict = field(default_factory=dict)
    own_auth: bool = False  # the example starts its own auth back end on the "auth" port
    background: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def prepare(self, command: str) -> str:
        command = re.sub(r"(?<![\w/])\.venv/bin/", f"{BIN}/", command)
        return bind(with_ports(command, self.ports), self.binding)

    async def run(self, command: str) -> str:
        return (await self.run_with_status(command))[0]

    async def run_with_status(self, command: str) -> tuple[str, int]:
        out, err, status = await getProcessOutputAndValue(
            "timeout", ["20", "/bin/bash", "-c", self.prepare(command)], env=self.env,
            path=str(self.directory),
        )  # fmt: skip
        return trimmed((out + err).decode()), status

    async def check(self, text: str, where: str, tail: bool = False, settle: float = 0) -> None:
        """Run a console block; each command's output must be the one shown (its last lines
        with ``tail``), at once or, with ``settle``, within that many seconds (a market engine
        publishes on its own beat)."""
        for command in console(text):
            if command.line.rstrip().endswith("&"):
                await self.start(command.line.rstrip()[:-1])
                continue
            deadline = reactor.seconds() + settle
            while True:
                output = await self.run(command.line)
                if tail:
                    shown = len(command.output.splitlines())
                    output = "\n".join(output.strip().splitlines()[-shown:])
                try:
                    assert_output(
                        command.output, output, self.binding, f"{where}: $ {command.line}"
                    )
                except AssertionError:
                    if reactor.seconds() < deadline:
                        await sleep(0.1)
                        continue
                    raise
                break

    async def script(self, text: str) -> None:
        """Run a script block (no prompt, no output shown)."""
        for command in console(text, prompt=""):
            if command.line.rstrip().endswith("&"):
                await self.start(command.line.rstrip()[:-1])
            else:
                output = await self.run(command.line)
                assert output == "", f"{command.line}: {output}"

    async def start(self, command: str, port: str = "auth") -> subprocess.Popen:
        """A background command; a gateway (``twistd ... exchange-stream``) on this run's
        ports, awaited until healthy; any other until ``port`` listens."""
        argv = shlex.split(self.prepare(command))
        gateway = Path(argv[0]).name == "twistd" and "exchange-stream" in argv
        if gateway:
            argv += ["--ws", f"tcp:{self.ports['ws']}:interface=127.0.0.1"]
            argv += ["--api", f"tcp:{self.ports['api']}:interface=127.0.0.1"]
            if self.own_auth:
                argv += ["--auth-url", f"http://127.0.0.1:{self.ports['auth']}/websocket_auth"]
        with (self.directory / f"background-{len(self.background)}.log").open("wb") as log:
            process = subprocess.Popen(argv, cwd=self.directory, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT)  # fmt: skip
        self.background.append(process)
        deadline = reactor.seconds() + 20

        async def ready() -> bool:
            return await (healthy(self.ports["api"]) if gateway else listening(self.ports[port]))

        while not await ready():
            assert process.poll() is None, f"{argv} ended: {self.log(process)}"
            assert reactor.seconds() < deadline, f"{argv} did not start: {self.log(process)}"
            await sleep(0.05)
        return process

    def log(self, process: subprocess.Popen) -> str:
        index = self.background.index(process)
        return (self.directory / f"background-{index}.log").read_text()

    async def stop(self) -> None:
        """SIGTERM to what is still running (a gateway drains its clients), SIGKILL after 15 s."""
        for process in self.background:
            if process.poll() is None:
                process.terminate()
        deadline = reactor.seconds() + 15
        for process in self.background:
            while process.poll() is None:
                if reactor.seconds() > deadline:
                    process.kill()
                await sleep(0.05)


async def healthy(api_port: int) -> bool:
    try:
        response = await http_client().get(f"http://127.0.0.1:{api_port}/healthz")
        await treq.content(response)
    except Exception:
        return False
    return response.code == 200


async def listening(port: int) -> bool:
    try:
        connected = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(Protocol)
        )
    except Exception:
        return False
    connected.transport.loseConnection()
    return True


async def post(api_port: int, path: str, body) -> tuple[int, dict]:
    response = await http_client().post(f"http://127.0.0.1:{api_port}{path}",
                                        data=json.dumps(body).encode())  # fmt: skip
    return response.code, json.loads(await treq.content(response))


# -- gateways and the auth back end ------------------------------------------------------


class DocsAuth(Resource):
    """The auth back end the docs' examples assume: ``***`` and ``token-1001`` are 1001,
    ``token-1002`` is 1002, ``slow`` is 1001 after 1 s, ``down`` answers 503, ``exp-<s>-<uid>``
    expires ``s`` seconds from now; any other token is refused."""

    isLeaf = True

    def render_POST(self, request):
        token = json.loads(request.content.read()).get("token")
        users = {"***": 1001, "token-1001": 1001, "token-1002": 1002, "slow": 1001}
        expiring = re.fullmatch(r"exp-(\d+)-(\d+)", str(token))
        request.setHeader("Content-Type", "application/json")
        if token == "down":
            request.setResponseCode(503)
            return b"{}"
        if expiring:
            answer = {"uid": int(expiring.group(2)), "exp": time.time() + int(expiring.group(1))}
            return json.dumps(answer).encode()
        if token not in users:
            request.setResponseCode(401)
            return b"{}"
        if token != "slow":
            return json.dumps({"uid": users[token]}).encode()

        def later():
            request.write(json.dumps({"uid": users[token]}).encode())
            request.finish()

        reactor.callLater(1.0, later)
        return NOT_DONE_YET


@pytest_twisted.async_yield_fixture
async def auth_url():
    port = await serverFromString(reactor, LOCAL).listen(Site(DocsAuth()))
    yield f"http://127.0.0.1:{port.getHost().port}/websocket_auth"
    await port.stopListening()


@pytest_twisted.async_yield_fixture
async def gateways(auth_url):
    """Starts fresh gateways in this process (``await gateways(**config)``) on free ports,
    asking ``DocsAuth``; stops them at the end."""
    started = []

    async def start(**config):
        running = await start_gateway(GatewayConfig(auth_url=auth_url, **config))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


@pytest_twisted.async_yield_fixture
async def shell(tmp_path):
    """A ``Shell`` in a fresh directory, with fresh ports."""
    running = Shell(tmp_path, {name: free_port() for name in DOCUMENTED_PORTS})
    yield running
    await running.stop()


def on(running) -> dict[str, int]:
    """The ports of an in-process gateway, for a console block."""
    return {"api": running.api_port, "ws": running.ws_port}


async def logged_in(running, token: str = "token-1001", *channels: str):
    client = await running.connect()
    assert await client.request({"op": "auth", "token": token}) == {"result": True}
    if channels:
        answer = await client.request({"op": "subscribe", "channels": list(channels)})
        assert answer == {"result": True}
    return client


# -- docs/protocol.md ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_protocol_the_tutorials_session(gateways):
    """The tutorial's session: auth, subscribe @balance, and the push a back end published."""
    running = await gateways()
    example = block("protocol-tutorial")
    await play(await running.connect(), example.text, example.where,
               pushed=publisher(running.api_port))  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_protocol_ids_are_echoed_or_refused(gateways):
    """``id`` is echoed on answers and errors; an id of another type is code 2 without one."""
    running = await gateways()
    example = block("protocol-ids")
    await play(await running.connect(), example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_a_failed_reauth_keeps_the_login_another_uid_drops_it(gateways):
    """Logged in as 1001: a refused token changes nothing, another uid's drops @balance."""
    running = await gateways()
    example = block("protocol-reauth")
    assert "(logged in as 1001)" in example.text
    await play(await logged_in(running), example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_a_login_expires_and_a_reauth_in_band_renews_it(gateways):
    """An ``exp`` ends the private subscriptions on time; an auth before it renews them (both
    runs at once, on two connections)."""
    running = await gateways()
    runs = [block("protocol-expiry"), block("protocol-expiry-renewed")]
    clients = [await running.connect() for _ in runs]
    opened = reactor.seconds()
    await gatherResults(
        [
            Deferred.fromCoroutine(play(client, run.text, run.where, opened=opened))
            for client, run in zip(clients, runs, strict=True)
        ]
    )


@pytest_twisted.ensureDeferred
async def test_protocol_subscribe_is_all_or_nothing(gateways):
    """A batch counts a repeated name once, names the first invalid channel, needs an auth for
    a private one; unsubscribing what one never had is fine."""
    running = await gateways()
    example = block("protocol-subscribe")
    assert "(not logged in)" in example.text
    await play(await running.connect(), example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_the_subscription_limit(gateways):
    """With 1020 subscriptions, a batch adding 5 is refused (code 7) and one adding 4 is not."""
    running = await gateways()
    example = block("protocol-limit")
    client = await running.connect()
    held = [f"S{n}@depth" for n in range(1020)]
    assert await client.request({"op": "subscribe", "channels": held}) == {"result": True}
    await play(client, example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_snapshots_after_apis_snapshot_publishes(gateways, shell):
    """api.md's two snapshot publishes, then protocol.md's subscribe: the answer, the kept
    snapshots in the order named, then a live message."""
    running = await gateways()
    shell.ports = on(running)
    publishes = block("api-snapshots")
    await shell.check(publishes.text, publishes.where)
    example = block("protocol-snapshots")
    live = publisher(running.api_port, when=lambda line: '"type":"update"' in line.text)
    await play(await running.connect(), example.text, example.where, pushed=live)


@pytest_twisted.ensureDeferred
async def test_protocol_positions_then_a_resume_then_a_lost_position(gateways):
    """``recover`` answers the latest offset and pushes carry theirs; a resume ``since`` that
    position replays exactly what followed; a position of another epoch is not served."""
    running = await gateways()
    for order in range(16):  # the example's @order is at offset 16
        status, _ = await post(running.api_port, "/v1/mesh/publish",
                               {"c": "ex:1001@order", "d": json.dumps({"n": order})})  # fmt: skip
        assert status == 200
    recover = block("protocol-recover")
    binding = await play(await logged_in(running), recover.text, recover.where,
                         pushed=publisher(running.api_port))  # fmt: skip
    resume = block("protocol-resume")
    for line in transcript(resume.text):  # published while the client was away
        if not line.sent and line.push:
            await publisher(running.api_port)(line)
    await play(await logged_in(running), resume.text, resume.where, binding)

    lost = block("protocol-lost")
    for order in range(3):
        await post(running.api_port, "/v1/mesh/publish",
                   {"c": "ex:1002@order", "d": json.dumps({"n": order})})  # fmt: skip
    client = await logged_in(running, "token-1002")
    since = {"@order": {"epoch": "another-epoch", "offset": 2}}
    client.send({"op": "subscribe", "channel": "@order", "since": since})
    await play(client, lost.text, lost.where)


@pytest_twisted.ensureDeferred
async def test_protocol_list_and_ping(gateways):
    """``list`` names the channels in the order they were subscribed; ``ping`` is answered."""
    running = await gateways()
    example = block("protocol-list-ping")
    client = await running.connect()
    listed = next(line for line in transcript(example.text) if '"result":[' in (line.text or ""))
    for channel in json.loads(listed.text)["result"]:
        assert await client.request({"op": "subscribe", "channel": channel}) == {"result": True}
    await play(client, example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_ops_wait_for_a_slow_auth(gateways):
    """Behind an auth that takes 1 s, a subscribe and a ping are answered in order after it."""
    running = await gateways()
    example = block("protocol-ordering")
    await play(await running.connect(), example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_the_rate_limit_answers_at_once(gateways):
    """40 pings behind a slow auth: the 21 beyond the bucket are refused at once (code 8),
    then the auth and the 19 pongs come."""
    running = await gateways()
    example = block("protocol-rate-limit")
    await play(await running.connect(), example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_a_lower_case_symbol_is_refused_with_a_hint(gateways):
    running = await gateways()
    example = block("protocol-lower-case")
    await play(await running.connect(), example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_error_answers(gateways):
    """Not JSON, an unknown op, an auth back end that is down: codes 2, 3 and 6."""
    running = await gateways()
    example = block("protocol-errors")
    await play(await running.connect(), example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_protocol_a_kick(gateways):
    """A kick ends the private subscriptions with a notice; the public ones stay."""
    running = await gateways()
    example = block("protocol-kick")

    async def kick(line: Line) -> None:
        assert await post(running.api_port, "/v1/mesh/kick", {"uid": 1001}) == (
            200, {"E": None, "r": {"s": 1, "f": 0}})  # fmt: skip

    await play(await running.connect(), example.text, example.where, pushed=kick)


class RawClient(Protocol):
    """A WebSocket client on a raw socket: the handshake, then frames exactly as given."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(handshake_request())

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)

    def close_frame(self) -> tuple[int, str]:
        _, _, frames = self.received.partition(b"\r\n\r\n")
        (payload,) = [payload for opcode, payload in server_frames(frames)[0] if opcode == 0x8]
        return int.from_bytes(payload[:2], "big"), payload[2:].decode()


BAD_FRAMES = {  # what protocol.md's raw socket client sent
    "binary frame": client_frame(b"\x01\x02", opcode=0x2),
    "65537-byte text frame": client_frame(b"x" * 65537),
    "invalid UTF-8 text": client_frame(b"{\xff}"),
    "unmasked frame": bytes([0x81, 2]) + b"{}",
    "client close 1001": client_frame((1001).to_bytes(2, "big"), opcode=0x8),
    "client close 4000": client_frame((4000).to_bytes(2, "big"), opcode=0x8),
}


@pytest_twisted.ensureDeferred
async def test_protocol_close_codes_seen_on_a_raw_socket(gateways):
    """Each frame of the raw-socket check closes the connection with the code and reason
    shown."""
    running = await gateways()
    example = block("protocol-close-codes")
    for line in example.text.splitlines():
        label, _, shown = line.partition(" -> ")
        assert label.strip() in BAD_FRAMES, f"{example.where}: no such frame here: {label!r}"
        client = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", running.ws_port), client)
        await until(lambda client=client: b"\r\n\r\n" in client.received)
        client.transport.write(BAD_FRAMES[label.strip()])
        await until(lambda client=client: b"\r\n\r\n" in client.received
                    and any(op == 0x8 for op, _ in server_frames(
                        client.received.partition(b"\r\n\r\n")[2])[0]))  # fmt: skip
        client.transport.loseConnection()
        assert repr(client.close_frame()) == shown, f"{example.where}: {label}"


# -- docs/api.md -------------------------------------------------------------------------


def published_text(command: str) -> str:
    """The ``d`` of a curl publish command (its ``-d`` or ``--data-raw`` body)."""
    argv = shlex.split(command.replace("\\\n", " "))
    body = next(argv[i + 1] for i, arg in enumerate(argv) if arg in ("-d", "--data-raw"))
    return json.loads(body)["d"]


@pytest_twisted.ensureDeferred
async def test_api_public_publishes_and_what_the_subscriber_received(gateways, shell):
    """Publishes to a channel with a subscriber (``s`` 1), to a stream channel without one (an
    offset), a binary one; the subscriber gets protocol.md's "Pushes" frames, byte for byte."""
    running = await gateways()
    shell.ports = on(running)
    client = await running.connect()
    assert await client.request({"op": "subscribe", "channel": "BTCUSDT@depth"}) == {"result": True}
    example = block("api-public")
    await shell.check(example.text, example.where)
    pushes = block("protocol-pushes")
    await play(client, pushes.text, pushes.where)


@pytest_twisted.ensureDeferred
async def test_api_the_tutorials_private_publish(gateways, shell):
    """The CONNMIX tutorial's curl reaches the client logged in as 1001, byte for byte."""
    running = await gateways()
    shell.ports = on(running)
    client = await logged_in(running, "token-1001", "@balance")
    example = block("api-private")
    await shell.check(example.text, example.where)
    (command,) = console(example.text)
    assert (await client.next_raw())[0].decode() == published_text(command.line)


@pytest_twisted.ensureDeferred
async def test_api_error_answers_400_401_413_and_a_reserved_channel(gateways, shell):
    """A ``d`` that is not a string (400), no bearer token (401), the token (200), a body over
    ``--max-publish-size`` (413), an ``es:`` channel (400)."""
    running = await gateways()
    shell.ports = on(running)
    example = block("api-error-400")
    await shell.check(example.text, example.where)
    reserved = block("api-reserved")
    await shell.check(reserved.text, reserved.where)

    shell.ports = on(await gateways(api_token="s3cret", max_publish_size=4096))
    big = {"c": "ex:BTCUSDT@depth", "d": "x" * 5000}
    (shell.directory / "big.json").write_text(json.dumps(big))
    example = block("api-token")
    await shell.check(example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_api_mesh_down_answers_503_and_health_says_so(gateways, shell):
    """With the Redis mesh and Redis stopped: a publish is 503 / 104 and /healthz is 503 with
    the body shown."""
    redis = RedisServer()
    try:
        running = await gateways(mesh=redis.url)
        mesh = running.gateway.mesh
        await until(lambda: mesh.available and mesh.receiving)
        shell.ports = on(running)
        client = await running.connect()
        redis.stop()
        await until(lambda: not mesh.available)
        example = block("api-mesh-down")
        await shell.check(example.text, example.where)
        health = block("api-healthz-down")
        await shell.check(f"$ curl -s http://127.0.0.1:6789/healthz\n{health.text}", health.where)
        await client.close()
    finally:
        redis.close()


@pytest_twisted.ensureDeferred
async def test_api_a_retry_with_the_same_key_publishes_once(gateways, shell):
    """Two publishes with one ``k`` answer the same offset; the client receives the order
    once."""
    running = await gateways()
    shell.ports = on(running)
    for order in range(16):  # the example's publish is @order's 17th
        await post(running.api_port, "/v1/mesh/publish",
                   {"c": "ex:1001@order", "d": json.dumps({"n": order})})  # fmt: skip
    client = await logged_in(running, "token-1001", "@order")
    example = block("api-idempotent")
    await shell.check(example.text, example.where)
    first, _ = console(example.text)
    assert (await client.next_raw())[0].decode() == published_text(first.line)
    await sleep(0.2)
    assert client.received.pending == []  # not twice


@pytest_twisted.ensureDeferred
async def test_api_batches(gateways, shell):
    """A batch answers one ``r`` per item; one bad item refuses the batch (400)."""
    running = await gateways()
    shell.ports = on(running)
    example = block("api-batches")
    await shell.check(example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_api_the_websocket_api_session(gateways):
    """/ws/v1: a publish, a batch with offsets, a kick, an unknown method, a frame that is not
    JSON, each answered with its ``i``."""
    running = await gateways()
    subscriber = await logged_in(running, "token-1001", "BTCUSDT@trades")
    example = block("api-ws-v1")
    await play(await connect(running.api_port, "/ws/v1"), example.text, example.where)
    await subscriber.close()


@pytest_twisted.ensureDeferred
async def test_api_a_kick_through_one_node_reaches_another(gateways, shell):
    """Two nodes on one Redis: the kick through A answers ``s`` 2; the client on B loses its
    private channels with a notice."""
    redis = RedisServer()
    try:
        a, b = await gateways(mesh=redis.url), await gateways(mesh=redis.url)
        for node in (a, b):
            await until(lambda mesh=node.gateway.mesh: mesh.available and mesh.receiving)
        shell.ports = on(a)
        kick = block("api-kick")

        async def kicked(line: Line) -> None:
            await shell.check(kick.text, kick.where)

        example = block("api-kick-client")
        client = await b.connect()
        await play(client, example.text, example.where, pushed=kicked)
        await client.close()
    finally:
        redis.close()


@pytest_twisted.ensureDeferred
async def test_api_a_kick_without_a_valid_uid(gateways, shell):
    """``{"uid":"1002@balance"}`` is 400 / 101."""
    shell.ports = on(await gateways())
    example = block("api-kick-400")
    await shell.check(example.text, example.where)


@pytest_twisted.ensureDeferred
async def test_api_health_ok_then_draining(gateways, shell):
    """/healthz is 200 with two clients; 0.2 s into a drain it is 503 ``draining`` with the
    four clients still there."""
    running = await gateways()
    shell.ports = on(running)
    clients = [await running.connect() for _ in range(2)]
    example = block("api-healthz")
    await shell.check(example.text, example.where)
    clients += [await running.connect() for _ in range(2)]
    running.gateway.drain(window=36_000)  # nobody sent away in the 0.2 s (60 s: a 1.3% chance)
    await sleep(0.2)
    draining = block("api-healthz-draining")
    await shell.check(f"$ curl -s http://127.0.0.1:6789/healthz\n{draining.text}", draining.where)
    for client in clients:
        await client.close()


# -- README.md ---------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture(scope="module")
async def demo(tmp_path_factory):
    """README's first command's gateway (``--demo``: a live market), for the module."""
    ports = {"api": free_port(), "ws": free_port()}
    running = Shell(tmp_path_factory.mktemp("demo"), ports)
    install = block("readme-install")
    assert install.text.startswith("python3 -m venv .venv && .venv/bin/pip install . && ")
    await running.start(install.text.split(" && ")[-1])  # the install steps are not run
    yield running
    await running.stop()


@pytest_twisted.ensureDeferred
async def test_readme_the_demo_and_its_tour(demo):
    """The demo gateway serves its page at / and the tour's session on its live market."""
    page = await http_client().get(f"http://127.0.0.1:{demo.ports['ws']}/")
    assert page.code == 200 and b"<html" in (await treq.content(page)).lower()
    example = block("readme-demo")
    client = await connect(demo.ports["ws"])
    await play(client, example.text, example.where, live=True)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_readme_the_tour_without_demo(shell):
    """The stand-in auth back end and the plain gateway, then the tour: login, subscribe, the
    curl publish and its answer, the push byte for byte, the mistakes' answers."""
    stand_in = block("readme-auth")
    shell.own_auth = True
    await shell.script(stand_in.text)
    client = await connect(shell.ports["ws"])
    session = block("readme-session")
    await play(client, session.text, session.where, shell.binding)
    publish = block("readme-publish")
    await shell.check(publish.text, publish.where)
    (command,) = console(publish.text)
    push = block("readme-push")
    assert transcript(push.text)[0].text == published_text(command.line)  # byte for byte
    await play(client, push.text, push.where, shell.binding)
    mistakes = block("readme-mistakes")
    await play(client, mistakes.text, mistakes.where, shell.binding)
    await client.close()


# -- docs/market.md ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_market_the_samples_stamped_now_reach_the_bars_and_the_ticker(shell):
    """The input samples, sent as the example sends them (stamped now), make the open bar and a
    ticker with the trade's volume."""
    samples = block("market-samples")
    (shell.directory / "samples.jsonl").write_text(samples.text + "\n")
    example = block("market-feed-today")
    await shell.check(example.text, example.where, settle=3)
    ticker = block("market-ticker-today")
    client = await connect(shell.ports["ws"])
    await play(client, ticker.text, ticker.where)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_market_the_bars_history_of_the_demo(demo):
    """The klines request on the demo's back-filled market: a closed bar, then the open one."""
    request, answer = block("market-klines-request"), block("market-klines-answer")
    output = await demo.run(request.text.replace("curl ", "curl -s ", 1))
    why = mismatch(load(unelided(answer.text)), load(output), {}, loose=True, live=True)
    assert why is None and load(output)[0] != load(output)[1], f"{answer.where}: {why}"
    assert [dict(bar)["closed"] for bar in load(output)] == [True, False], output


# -- docs/client.md ----------------------------------------------------------------------


class Lines(ProcessProtocol):
    """A process's JSON lines as they come, and its end."""

    def __init__(self) -> None:
        self.lines: list = []
        self.errors = b""
        self.ended = Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *whole, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(json.loads(line) for line in whole if line)

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: client.md's example needs Node 20 or later")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    major = int(version.strip().lstrip("v").split(".")[0])
    return [node, "--experimental-websocket"] if major < 22 else [node]  # Node 22: built in


HARNESS = """\
"use strict";
const say = (line) => process.stdout.write(JSON.stringify(line) + "\\n");
const text = (value) => (typeof value === "object" ? JSON.stringify(value) : String(value));
globalThis.window = { ExchangeStream: require(%(client)s) };
const logs = { log: (...values) => say({ log: values.map(text) }) };
const drawn = (bids, asks) => say({ render: [bids.length, asks.length] });
(async (console, render, userToken) => {
%(example)s
})(logs, drawn, "demo-1001").catch((error) => say({ error: String(error) }));
"""


@pytest_twisted.ensureDeferred
async def test_client_md_example_in_node(demo, tmp_path):
    """client.md's example, as a browser page would run it (``window.ExchangeStream``), in
    Node against the demo gateway (its URL and ``userToken`` the demo's): it connects, logs
    trades and the ticker, draws a verified book and logs the private channels after the
    login."""
    example = block("client-example")
    public = "wss://stream.example.com/exchange-stream"
    assert public in example.text
    code = example.text.replace(public, f"ws://127.0.0.1:{demo.ports['ws']}/exchange-stream")
    client_js = json.dumps(str(ROOT / "clients" / "js" / "client.js"))
    page = tmp_path / "page.js"
    page.write_text(HARNESS % {"client": client_js, "example": code})
    out = Lines()
    command = node_command()
    process = reactor.spawnProcess(out, command[0], [*command, str(page)], env=os.environ)
    wanted = {
        "ready": lambda log: log == ["connection:", "ready"],
        "trade": lambda log: len(log) == 3 and log[0] in ("buy", "sell") and _decimal(log[1]),
        "ticker": lambda log: log[0] == "last" and _decimal(log[1]) and log[2].endswith("%"),
        "private": lambda log: log[0] in ("@balance", "@order", "@position", "@account"),
    }
    seen: set[str] = set()

    def done() -> bool:
        for line in out.lines:
            assert "error" not in line, line
            if "render" in line and min(line["render"]) > 0:
                seen.add("render")
            for name, like in wanted.items():
                if "log" in line and like(line["log"]):
                    seen.add(name)
        return seen == {*wanted, "render"} or out.ended.called

    try:
        await until(done, timeout=30)
    finally:
        if not out.ended.called:
            process.signalProcess("TERM")
        await out.ended
    assert seen == {*wanted, "render"}, (seen, out.lines[-5:], out.errors.decode())


def _decimal(text: str) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?", text) is not None


# -- docs/running.md ---------------------------------------------------------------------

RUNNING = (ROOT / "docs" / "running.md").read_text()


@pytest_twisted.ensureDeferred
async def test_running_bad_options_and_config_files_stop_the_start(shell):
    """Each bad option (and each bad config file, made as its message says) stops the start
    with status 1 and the last line shown."""
    runs = [
        (command.line, command.output) for command in console(block("running-bad-options").text)
    ]
    for number, line in enumerate(block("running-bad-config").text.splitlines()):
        unknown = re.fullmatch(r"twistd -n: unknown key '([\w-]+)' in (\S+)", line)
        typed = re.fullmatch(r"twistd -n: ([\w-]+) in (\S+) must be a str", line)
        assert unknown or typed, f"running-bad-config, line {number + 1}: {line}"
        key, name = (unknown or typed).groups()
        (shell.directory / name).write_text(f'{key} = "tcp:6790"\n' if unknown else f"{key} = 1\n")
        runs.append((f"twistd -n exchange-stream --config {name}", line))
    results = await gatherResults(
        [Deferred.fromCoroutine(shell.run_with_status(command)) for command, _ in runs]
    )
    for (command, shown), (output, status) in zip(runs, results, strict=True):
        assert (status, output.strip().splitlines()[-1]) == (1, shown), (command, output)


@pytest_twisted.ensureDeferred
async def test_running_the_config_file_example(shell):
    """Started with ``--config`` and ``--ws`` (and ``--api``) on the command line, the gateway
    takes the token and the subscription limit from the file."""
    example = block("running-config")
    (shell.directory / "exchange-stream.toml").write_text(example.text)
    assert "`--config exchange-stream.toml --ws tcp:41493:interface=127.0.0.1 ...`" in RUNNING
    await shell.start("twistd -n --pidfile= exchange-stream --config exchange-stream.toml")
    settings = tomllib.loads(example.text)
    url = f"http://127.0.0.1:{shell.ports['api']}/v1/mesh/publish"
    body = json.dumps({"c": "ex:A@depth", "d": "{}"}).encode()
    refused = await http_client().post(url, data=body)
    bearer = {"Authorization": f"Bearer {settings['api-token']}"}
    allowed = await http_client().post(url, data=body, headers=bearer)
    assert (refused.code, allowed.code) == (401, 200)
    client = await connect(shell.ports["ws"], settings["path"])
    limit = settings["max-subscriptions"]
    channels = [f"S{n}@depth" for n in range(limit + 1)]
    answer = await client.request({"op": "subscribe", "channels": channels})
    assert answer == {"code": 7, "msg": "Too many subscriptions"}
    answer = await client.request({"op": "subscribe", "channels": channels[:limit]})
    assert answer == {"result": True}
    await client.close()


@pytest_twisted.ensureDeferred
async def test_running_the_limits_file_example(shell):
    """With limits.toml, 12 pings sent at once get ``op-burst`` pongs and code 8 for the rest."""
    example = block("running-limits")
    (shell.directory / "limits.toml").write_text(example.text)
    await shell.start("twistd -n --pidfile= exchange-stream --config limits.toml")
    burst = tomllib.loads(example.text)["op-burst"]
    assert f"12 pings sent at once got {burst} pongs and {12 - burst} code 8 answers" in RUNNING
    client = await connect(shell.ports["ws"])
    for number in range(12):
        client.send({"op": "ping", "id": number})
    answers = [await client.next() for _ in range(12)]
    assert sum("op" in answer for answer in answers) == burst
    assert sum(answer.get("code") == 8 for answer in answers) == 12 - burst
    await client.close()


class RawRequest(Protocol):
    """Sends a request, keeps what comes back until the end of the answer's head."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.answer = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.answer += data
        if b"\r\n\r\n" in self.answer and not self.done.called:
            self.done.callback(self.answer)
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.callback(self.answer)


async def status_line(port: int, *headers: str) -> str:
    request = RawRequest(handshake_request("/exchange-stream", *headers))
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), request)
    return (await request.done).split(b"\r\n", 1)[0].decode()


@pytest_twisted.ensureDeferred
async def test_running_allowed_origins(gateways):
    """Each origin of the example is let in (101) or refused (400, Autobahn's reason) as
    shown."""
    allowed = "https://app.example.com, https://*.example.org"
    assert f"`--allowed-origins '{allowed}'`" in RUNNING
    running = await gateways(allowed_origins=allowed)
    example = block("running-origins")
    seen = []
    for line in example.text.splitlines():
        origin = re.match(r"origin=([^ ]+): ", line)
        headers = [f"Origin: {origin.group(1)}"] if origin else []
        status = await status_line(running.ws_port, *headers)
        _, code, reason = status.split(" ", 2)
        said = "101 open" if code == "101" else f"HTTP {code} {reason}"
        seen.append(f"origin={origin.group(1)}: {said}" if origin else f"(no Origin): {said}")
    assert seen == example.text.splitlines()


@pytest_twisted.ensureDeferred
async def test_running_a_refused_handshake_is_a_status_line(gateways, shell):
    """Past ``--max-connections-per-ip`` a handshake is answered 429 and nothing else."""
    assert "With `--max-connections-per-ip 2\n--real-ip-header X-Forwarded-For`" in RUNNING
    running = await gateways(max_connections_per_ip=2, real_ip_header="X-Forwarded-For")
    shell.ports = on(running)
    clients = [await running.connect() for _ in range(2)]
    example = block("running-proxy-429")
    await shell.check(example.text, example.where)
    for client in clients:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_running_the_app_tac_example(shell):
    """The embedding application: its client logs in, subscribes to @order and receives what
    its internal API was posted; ``GET /`` still serves the site's page."""
    example = block("running-app-tac")
    (shell.directory / "app.tac").write_text(with_ports(example.text, shell.ports))
    assert "run with `twistd -ny app.tac`" in RUNNING
    await shell.start("twistd -ny app.tac", port="internal")
    client = await connect(shell.ports["web"], "/realtime/ws")
    assert await client.request({"op": "auth", "token": "app-token-1001"}) == {"result": True}
    assert await client.request({"op": "subscribe", "channel": "@order"}) == {"result": True}
    order = '{"event":"@order","data":{"orderId":7}}'
    answer = await post(shell.ports["internal"], "/internal/v1/mesh/publish",
                        {"c": "ex:1001@order", "d": order})  # fmt: skip
    assert answer == (
        200,
        {"E": None, "r": {"s": 1, "f": 0, "offset": 1, "epoch": answer[1]["r"]["epoch"]}},
    )
    assert (await client.next_raw())[0].decode() == order
    page = await http_client().get(f"http://127.0.0.1:{shell.ports['web']}/")
    assert await treq.content(page) == b"my exchange\n"
    await client.close()


@pytest_twisted.ensureDeferred
async def test_running_the_plain_program_example(shell):
    """The program that builds the service and publishes in-process every second: a client of
    its ticker receives that message."""
    example = block("running-program")
    (shell.directory / "program.py").write_text(with_ports(example.text, shell.ports))
    (message,) = re.findall(r"Publication\(b'([^']*)'\)", example.text)
    await shell.start(f"{sys.executable} program.py", port="api")
    client = await connect(shell.ports["ws"])
    assert await client.request({"op": "subscribe", "channel": "BTCUSDT@ticker"}) == {
        "result": True
    }
    assert (await client.next_raw())[0].decode() == message
    await client.close()


@pytest_twisted.ensureDeferred
async def test_running_the_in_memory_testing_example(tmp_path):
    """The ``exchange_stream.testing`` example runs, its assertions holding, with the installed
    package."""
    example = block("running-testing")
    out, err, status = await getProcessOutputAndValue(
        sys.executable, ["-c", example.text], env=os.environ, path=str(tmp_path)
    )
    assert status == 0, (out + err).decode()
