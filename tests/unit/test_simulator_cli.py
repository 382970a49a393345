"""`laneway simulate-provider` as people run it: a real process, a real port, a signal to stop."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import IO

import pytest

from laneway import cmd_simulate_provider
from laneway.cli import build_parser
from laneway.errors import BadInput


def read_url(stderr: IO[str], deadline: float) -> str:
    """Read the process's log until the line that announces its URL."""
    while time.monotonic() < deadline:
        line = stderr.readline()
        if not line:
            break
        match = re.search(r"listening on (http://\S+/v1)", line)
        if match:
            return match.group(1)
    raise AssertionError("simulate-provider never logged its URL")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_simulate_provider_serves_until_a_stop_signal_and_exits_0(stop_signal: int) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "laneway",
            "simulate-provider",
            "--port",
            "0",
            "--model",
            "cli-model",
            "--api-key",
            "sk-cli-secret",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = read_url(proc.stderr, time.monotonic() + 30)
        request = urllib.request.Request(
            f"{url}/chat/completions",
            data=json.dumps(
                {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
            ).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-cli-secret"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            reply = json.load(resp)

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0
        log = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert reply["choices"][0]["message"]["content"] == "[cli-model] ok: hi"
    assert "sk-cli-secret" not in log


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "70000"], "--port must be between 0 and 65535; got 70000"),
        (["--port", "0", "--latency-ms", "-5"], "--latency-ms must be 0 or more; got -5"),
    ],
)
def test_bad_arguments_are_bad_input_with_a_message(args: list[str], needle: str) -> None:
    parsed = build_parser().parse_args(["simulate-provider", *args])

    with pytest.raises(BadInput, match=re.escape(needle)):
        cmd_simulate_provider.run(parsed)
