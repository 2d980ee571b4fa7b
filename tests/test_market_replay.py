"""Replaying a recording (docs/market.md, "Replaying a recording"): the installed ``twistd
exchange-market --replay`` reproduces the committed output of the committed recording byte for
byte, and the same comes out in process, read in other chunks (another speed)."""

import gzip
import io
import subprocess
import sys
from pathlib import Path

import pytest_twisted

from exchange_stream.adapters import replay as replay_module
from exchange_stream.adapters.replay import OutputFile
from exchange_stream.market_service import replay_service
from exchange_stream.services.market_engine import MarketSettings
from tests.recording import recording

DATA = Path(__file__).resolve().parent / "data"
RECORDING = DATA / "market-recording.jsonl"
EXPECTED = DATA / "market-replay-expected.jsonl.gz"


def expected() -> list[bytes]:
    return gzip.decompress(EXPECTED.read_bytes()).splitlines()


def first_difference(got: list[bytes], want: list[bytes]) -> str:
    for number, (mine, theirs) in enumerate(zip(got, want, strict=False), 1):
        if mine != theirs:
            return f"line {number}:\n got  {mine[:300]!r}\n want {theirs[:300]!r}"
    return f"{len(got)} lines, {len(want)} expected"


def test_the_committed_recording_is_the_generators():
    assert RECORDING.read_text().splitlines() == recording()


def test_twistd_replays_the_recording_to_the_committed_output(tmp_path):
    output = tmp_path / "out.jsonl"
    twistd = Path(sys.executable).with_name("twistd")
    run = subprocess.run(
        [
            str(twistd),
            "-n",
            "--pidfile=",
            "--logfile=-",
            "exchange-market",
            "--replay",
            str(RECORDING),
            "--output",
            str(output),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "replay done: 1832 lines" in run.stdout
    got = output.read_bytes().splitlines()
    assert got == expected(), first_difference(got, expected())


@pytest_twisted.ensureDeferred
async def test_the_output_does_not_depend_on_how_fast_it_is_read(monkeypatch):
    monkeypatch.setattr(replay_module, "CHUNK", 7)  # other turns of the reactor
    written = io.BytesIO()
    output = OutputFile(written)
    with RECORDING.open("rb") as recorded:
        service, replay = replay_service(recorded, output, MarketSettings(), output.settled)
        service.startService()
        await replay.finished
        service.stopService()
    got = written.getvalue().splitlines()
    assert got == expected(), first_difference(got, expected())
    refused = dict(service.engine.refused)
    reasons = {"duplicate": 16, "conflict": 8, "stale_book": 11, "future": 1, "number": 2}
    assert refused == {**reasons, "late": 3}
