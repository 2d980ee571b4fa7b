"""What every bench script shares: ports, child processes, the servers they start, /proc
figures, the run header and tables.

Everything here talks to 127.0.0.1 only, and every wait has a deadline, so that a benchmark
that goes wrong stops by itself instead of hanging or touching anything else on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
import io
import os
import platform
import resource
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
LOOPBACK = "127.0.0.1"  # The only address a benchmark talks to.
SOMEBODY_ELSES_REDIS = 6379  # Never used, even when free.
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class BenchmarkError(Exception):
    """The benchmark cannot run, or a result would be meaningless."""


def progress(text: str) -> None:
    """Progress goes to stderr so that figures (or ``--json``) on stdout stay clean."""
    print(text, file=sys.stderr, flush=True)


# --- Ports and waiting ---------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (never 6379)."""
    for _ in range(10):
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
        if port != SOMEBODY_ELSES_REDIS:
            return port
    raise BenchmarkError("no free port")


def wait_until(
    ready: Callable[[], bool], timeout: float, what: str, alive: subprocess.Popen
) -> None:
    """Poll ``ready`` every 50 ms until it holds; fail if ``alive`` exits or time runs out.

    Connection errors count as "not yet": the process is still starting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive.poll() is not None:
            raise BenchmarkError(f"{what}: the process exited ({alive.returncode})")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if ready():
                return
        time.sleep(0.05)
    raise BenchmarkError(f"{what}: not ready after {timeout:.0f} s")


def read_line(stream: IO[str], timeout: float, what: str) -> str:
    """The next line a child prints, waiting at most ``timeout`` (a bare readline could wait
    forever). The child writes whole lines and flushes, so a readable pipe holds one."""
    readable, _, _ = select.select([stream], [], [], timeout)
    if not readable:
        raise BenchmarkError(f"{what}: nothing after {timeout:.0f} s")
    line = stream.readline()
    if not line:
        raise BenchmarkError(f"{what}: the process closed its output")
    return line.strip()


def raise_fd_limit() -> None:
    """Open-file soft limit up to the hard one (children inherit it): one fd a connection."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- Child processes -----------------------------------------------------------------------


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the calling thread on ``cpus`` for a while (``None``: leave it as it is).

    ``sched_setaffinity(0)`` changes the calling thread only and a child inherits it at
    fork, so a thread that pins itself, forks and pins itself back pins the child from its
    first instruction, with every process and thread it starts (nginx's workers), and is
    safe while other threads run, unlike a ``preexec_fn``.
    """
    if cpus is None:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


EVERY_CPU = -1  # a ``cpu`` that means all of the machine's, whatever the caller's own affinity


class Processes:
    """Every process a benchmark started, so that each is stopped on the way out.

    Each child gets its own session (process group), so one signal reaches a server's
    workers too, and Ctrl-C in the terminal reaches only the script, whose ``with`` block
    then stops the children.
    """

    def __init__(self) -> None:
        self._running: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_: object) -> None:
        for process in reversed(self._running[:]):
            self.stop(process)

    def spawn(
        self, command: list[str], *, cpu: int | None = None, **popen: Any
    ) -> subprocess.Popen:
        """Start ``command``, pinned to ``cpu`` if given (``EVERY_CPU``: free to run on any,
        although this process may be pinned)."""
        cpus = (
            None if cpu is None else {cpu} if cpu != EVERY_CPU else set(range(os.cpu_count() or 1))
        )
        with pinned(cpus):
            process = subprocess.Popen(command, start_new_session=True, **popen)
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after ``timeout``.

        Only while the leader is not reaped: until then its pid (the group's id) cannot
        have been given to another process.
        """
        if process in self._running:
            self._running.remove(process)
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
                break
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()


# --- The servers a benchmark starts --------------------------------------------------------


def command_output(*command: str) -> str:
    """What a short command prints (stdout and stderr), for a header; "?" if it fails."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return (done.stdout + done.stderr).strip()
    return "?"


def git(*args: str) -> str:
    """Output of a read-only git command in this repository ("?" if git fails)."""
    return command_output("git", "-C", str(REPOSITORY), *args)


@dataclass(frozen=True)
class GatewayCode:
    """Which exchange_stream a gateway runs: a directory put first on ``PYTHONPATH`` (None:
    the package installed in this venv), and a description for the run's header."""

    pythonpath: Path | None
    description: str

    @staticmethod
    def add_options(parser: argparse.ArgumentParser) -> None:
        code = parser.add_mutually_exclusive_group()
        code.add_argument(
            "--installed",
            action="store_true",
            help="run the exchange_stream installed in this venv, not the checkout",
        )
        code.add_argument(
            "--rev",
            help="run this git revision (a git archive in a temporary directory): figures "
            "that belong to a commit while the checkout is being edited",
        )

    @classmethod
    def chosen(cls, args: argparse.Namespace, scratch: Path) -> GatewayCode:
        """What ``add_options`` asked for; by default the checkout as it is."""
        if args.installed:
            version = importlib.metadata.version("exchange-stream")
            return cls(None, f"installed-{version}")
        if args.rev:
            commit = git("rev-parse", "--short", f"{args.rev}^{{commit}}")
            if commit == "?":
                raise BenchmarkError(f"--rev {args.rev}: no such commit")
            archive = subprocess.run(
                ["git", "-C", str(REPOSITORY), "archive", commit],
                capture_output=True, timeout=60, check=True,
            )  # fmt: skip
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(scratch / "code", filter="data")
            return cls(scratch / "code", f"rev-{commit}")
        dirty = git("status", "--porcelain", "--", ".", ":!bench")  # bench/ is not under test
        commit = git("rev-parse", "--short", "HEAD")
        return cls(REPOSITORY, f"checkout-{commit}" + ("+uncommitted" if dirty else ""))

    def environment(self) -> dict[str, str]:
        if self.pythonpath is None:
            return dict(os.environ)
        path = [str(self.pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
        return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


@dataclass(frozen=True)
class Gateway:
    """A running ``twistd -n exchange-stream``: its process, ports and log."""

    process: subprocess.Popen
    ws_port: int
    api_port: int
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.ws_port}/exchange-stream"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.api_url}/healthz", timeout=2) as answer:
            return answer.status == 200


def start_gateway(
    processes: Processes, code: GatewayCode, workdir: Path, *options: str,
    name: str = "gateway", cpu: int | None = None, profile: Path | None = None,
) -> Gateway:  # fmt: skip
    """``twistd -n exchange-stream`` on free loopback ports, once ``/healthz`` says 200.

    ``profile``: run it under twistd's own cProfile and write pstats there when it stops
    (``python -m cProfile twistd`` would lose them: twistd ends itself with the signal that
    stopped it). The gateway then runs about three times slower.
    """
    twistd = Path(sys.executable).parent / "twistd"
    if not twistd.exists():
        raise BenchmarkError(f"{twistd} not found: run this with the repository's venv")
    ws_port, api_port = free_port(), free_port()
    profiling = ["--profiler=cprofile", "--savestats", f"--profile={profile}"] if profile else []
    command = [
        str(twistd), "-n", "--pidfile=", *profiling, "exchange-stream",
        "--ws", f"tcp:{ws_port}:interface={LOOPBACK}",
        "--api", f"tcp:{api_port}:interface={LOOPBACK}", *options,
    ]  # fmt: skip
    log = workdir / f"{name}.log"
    with log.open("w") as out:
        process = processes.spawn(
            command, cpu=cpu, env=code.environment(), cwd=workdir, stdout=out, stderr=out,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    gateway = Gateway(process, ws_port, api_port, log)
    try:
        wait_until(gateway.healthy, 30, f"{name} /healthz", process)
    except BenchmarkError as error:
        tail = log.read_text(errors="replace").splitlines()[-6:]
        raise BenchmarkError("\n  ".join([str(error), *tail])) from None
    return gateway


@dataclass(frozen=True)
class Redis:
    """A throwaway ``redis-server``: a free 127.0.0.1 port, nothing saved, its own directory."""

    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict (one inline command, one bulk-string answer)."""
        with socket.create_connection((LOOPBACK, self.port), timeout=2) as connection:
            connection.sendall(f"INFO {section}\r\n".encode())
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
                head, _, rest = answer.partition(b"\r\n")
                if head[:1] != b"$" or len(rest) >= int(head[1:]) + 2:
                    break
        pairs = (line.partition(":") for line in answer.decode(errors="replace").splitlines())
        return {key: value for key, colon, value in pairs if colon}


def start_redis(processes: Processes, workdir: Path, cpu: int | None = None) -> Redis:
    """``redis-server`` from PATH (else the venv's) for a Redis mesh, never on 6379.

    Before anything uses it, the server answering on its port must report our process id,
    so that another Redis is never touched, even if one took the port in between.
    """
    executable = shutil.which("redis-server") or str(Path(sys.executable).parent / "redis-server")
    port = free_port()
    command = [
        executable, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--daemonize", "no", "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip
    quiet = subprocess.DEVNULL  # its log goes to --logfile
    process = processes.spawn(command, cpu=cpu, stdin=quiet, stdout=quiet, stderr=quiet)
    redis = Redis(process, port)

    def ours() -> bool:
        answering = redis.info("server").get("process_id")
        if answering not in (None, str(process.pid)):
            raise BenchmarkError(f"port {port} is another Redis's (pid {answering}); not using it")
        return answering is not None

    wait_until(ours, 15, "redis-server", process)
    return redis


# --- /proc figures -------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (in clock ticks of 10 ms) from ``/proc/PID/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name: [0] is field 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rss_kib(pid: int) -> int:
    """Resident memory (``VmRSS``) of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchmarkError(f"no VmRSS for process {pid}")


def child_pids(parent: int) -> list[int]:
    """The processes ``parent``'s threads started (nginx's workers, a gateway's)."""
    children = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        with contextlib.suppress(OSError):
            children += map(int, (task / "children").read_text().split())
    return children


def own_cpu_seconds() -> float:
    """CPU of this process, all threads (a publisher, an in-process benchmark)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one instant: the wall clock, some processes, this one, the machine.

    ``busy`` is user + nice + system + irq + softirq from ``/proc/stat``, for ``cpu`` (all)
    and each CPU. Loopback TCP does much of its work in softirq, which this kernel also
    charges to the process it interrupted, so ``interrupts`` only tells how much of the
    figures is the kernel's network stack. ``steal`` is time the hypervisor gave to someone
    else: a high one makes a run slow and noisy.
    """

    wall: float
    processes: tuple[float, ...]
    own: float
    busy: dict[str, float]
    interrupts: float
    steal: float

    @classmethod
    def take(cls, *pids: int) -> CpuSnapshot:
        busy: dict[str, float] = {}
        interrupts = steal = 0.0
        with open("/proc/stat") as file:
            for line in file:
                if not line.startswith("cpu"):
                    break
                name, *values = line.split()
                user, nice, system, _idle, _iowait, irq, softirq, stolen = map(int, values[:8])
                busy[name] = (user + nice + system + irq + softirq) / CLOCK_TICK
                if name == "cpu":
                    interrupts, steal = (irq + softirq) / CLOCK_TICK, stolen / CLOCK_TICK
        processes = tuple(process_cpu_seconds(pid) for pid in pids)
        return cls(time.monotonic(), processes, own_cpu_seconds(), busy, interrupts, steal)


# --- What a run reports --------------------------------------------------------------------


def _machine() -> str:
    """CPU model, CPU count and memory: what makes figures comparable or not."""
    info = Path("/proc/cpuinfo").read_text()
    models = [line.partition(":")[2].strip() for line in info.splitlines() if "model name" in line]
    model = models[0] if models else platform.machine()
    memory = Path("/proc/meminfo").read_text().split()[1]
    return f"{os.cpu_count()}x {model}, {int(memory) / 2**20:.0f} GiB"


def run_header(code: GatewayCode | None = None, **extra: object) -> dict[str, object]:
    """When, on what, which code and which command: enough to file a run in RESULTS.md."""
    packages = ("twisted", "autobahn", "websockets")
    versions = {package: importlib.metadata.version(package) for package in packages}
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "commit": git("rev-parse", "--short", "HEAD"),
        **({"code": code.description} if code else {}),
        "python": platform.python_version(),
        **versions,
        **extra,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "command": shlex.join(["python", *sys.argv]),
    }


def header_line(header: dict[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in header.items())


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, figures right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(cell.rjust(width) if index else cell.ljust(width)
                  for index, (cell, width) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    )  # fmt: skip
