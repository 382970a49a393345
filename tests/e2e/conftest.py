"""Fixtures for the end-to-end tests: the real `laneway serve` process in front of simulated
providers running on background threads, all on loopback ports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from router_sidecar.simulator import SimulatedProvider
from tests.e2e.harness import lane, policy_doc, text

LAUNCH_TIMEOUT_S = 20.0
SECRET = "sk-e2e-not-a-real-key-7731"


@dataclass
class Served:
    """A running `laneway serve` and what it was started with."""

    url: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    sims: dict[str, SimulatedProvider]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> dict[str, object]:
        with urllib.request.urlopen(self.url + "/readyz", timeout=5) as resp:
            return json.loads(resp.read())


def start_serve(
    config_path: Path, secrets_dir: Path, log_path: Path, out_path: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Spawn `laneway serve --port 0` and wait for the address it logs.

    Standard error goes to `log_path`; standard output (the decision lines) too, or to
    `out_path` when given."""
    cmd = [
        sys.executable, "-m", "laneway", "serve",
        "--config", str(config_path),
        "--port", "0",
        "--secrets-dir", str(secrets_dir),
    ]
    with open(log_path, "wb") as log:
        if out_path is None:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        else:
            with open(out_path, "wb") as out:
                process = subprocess.Popen(cmd, stdout=out, stderr=log)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+)", log_path.read_text(errors="replace"))
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"laneway serve did not start:\n{log_path.read_text()}")


def stop_serve(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`laneway serve` with a fast route (OpenAI lane, Anthropic backup) and a strong route."""
    workdir = tmp_path_factory.mktemp("serve")
    secrets_dir = workdir / "secrets"
    (secrets_dir / "provider").mkdir(parents=True)
    (secrets_dir / "provider" / "apiKey").write_text(SECRET + "\n")
    sims = {
        "fast": SimulatedProvider(model="fast", api="openai", api_key=SECRET),
        "backup": SimulatedProvider(model="backup", api="anthropic", api_key=SECRET),
        "strong": SimulatedProvider(model="strong", api="openai", api_key=SECRET),
    }
    for sim in sims.values():
        sim.start_in_thread()
    key = ("provider", "apiKey")
    doc = policy_doc(
        {
            "fast": lane(sims["fast"].url, secret=key),
            "backup": lane(sims["backup"].url, api="anthropic", secret=key),
            "strong": lane(sims["strong"].url, secret=key, inp=3, out=15),
        },
        {"fast": ["fast", "backup"], "strong": ["strong"]},
        triage=[{"name": "technical", "when": {"keywordsAny": ["python"]}, "route": "strong"}],
    )
    config_path = workdir / "config.json"
    config_path.write_text(text(doc))
    log_path = workdir / "serve.log"
    process, url = start_serve(config_path, secrets_dir, log_path)
    try:
        yield Served(url, process, config_path, log_path, sims)
    finally:
        stop_serve(process)
        for sim in sims.values():
            sim.stop_thread()
        if os.environ.get("LANEWAY_E2E_SHOW_LOG"):
            print(log_path.read_text())
