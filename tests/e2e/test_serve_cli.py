"""`laneway serve` as a process: start-up errors, live config reload, clean shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router_sidecar.simulator import SimulatedProvider
from tests.e2e.conftest import start_serve, stop_serve
from tests.e2e.harness import lane, metric_value, policy_doc, text, versioned


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "laneway", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_broken_config_at_start_is_exit_code_2_naming_the_file_and_field(tmp_path: Path) -> None:
    doc = policy_doc({"a": lane("http://127.0.0.1:9/v1")}, {"main": ["a"]})
    doc["defaultRoute"] = "missing"
    path = tmp_path / "config.json"
    path.write_text(text(versioned(doc)))
    result = _serve("--config", str(path), "--port", "0")
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "config.defaultRoute: route 'missing' is not one of main" in result.stderr

    path.write_text(text(doc))  # edited by hand: the content hash no longer matches
    result = _serve("--config", str(path), "--port", "0")
    assert result.returncode == 2
    assert "recompile" in result.stderr


def test_a_missing_config_file_or_bad_flag_is_exit_code_2(tmp_path: Path) -> None:
    result = _serve("--config", str(tmp_path / "nope.json"))
    assert result.returncode == 2 and "nope.json" in result.stderr
    doc = policy_doc({"a": lane("http://127.0.0.1:9/v1")}, {"main": ["a"]})
    (tmp_path / "c.json").write_text(text(doc))
    result = _serve("--config", str(tmp_path / "c.json"), "--watch-configmap", "no-slash")
    assert result.returncode == 2 and "NAMESPACE/NAME" in result.stderr


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _ready(url: str) -> dict[str, Any]:
    return json.loads(_get(url + "/readyz")[1])


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_the_process_reloads_its_config_file_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    first = policy_doc({"a": lane("http://127.0.0.1:9/v1")}, {"main": ["a"]})
    second = policy_doc({"a": lane("http://127.0.0.1:9/v1")}, {"main": ["a"]}, mode="observe")
    path = tmp_path / "config.json"
    path.write_text(text(first))
    process, url = start_serve(path, tmp_path / "secrets", tmp_path / "serve.log")
    try:
        assert _ready(url)["configVersion"] == first["version"]

        tmp = tmp_path / "config.json.new"
        tmp.write_text(text(second))
        os.replace(tmp, path)
        _wait_for(lambda: _ready(url)["configVersion"] == second["version"])

        path.write_text('{"apiVersion": "router.laneway.dev/v1", "kind": "RouterConfig"}')
        _wait_for(lambda: _ready(url)["stale"] is True)
        assert _ready(url)["configVersion"] == second["version"]
        metrics = _get(url + "/metrics")[1]
        assert metric_value(metrics, "laneway_config_stale") == 1
        assert metric_value(metrics, "laneway_config_info", version=second["version"]) == 1
    finally:
        code = stop_serve(process)
    assert code == 0
    log = (tmp_path / "serve.log").read_text()
    assert "Rejected config" in log


def test_decision_lines_are_json_lines_on_stdout_and_all_are_written_by_shutdown(
    tmp_path: Path,
) -> None:
    doc = policy_doc({"a": lane("http://127.0.0.1:9/v1")}, {"main": ["a"]})
    path = tmp_path / "config.json"
    path.write_text(text(doc))
    out, err = tmp_path / "decisions.jsonl", tmp_path / "serve.log"
    process, url = start_serve(path, tmp_path / "secrets", err, out_path=out)
    ids = []
    try:
        for n in range(5):
            body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": str(n)}]})
            request = urllib.request.Request(
                url + "/v1/chat/completions", data=body.encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                urllib.request.urlopen(request, timeout=10)
            except urllib.error.HTTPError as exc:  # the only lane refuses connections
                ids.append(exc.headers["x-laneway-decision-id"])
    finally:
        code = stop_serve(process)

    assert code == 0 and len(ids) == 5
    records = [json.loads(line) for line in out.read_text().splitlines()]  # JSON, every line
    assert [r["decisionId"] for r in records] == ids
    assert all(r["outcome"] != "ok" and r["lanesTried"][0]["lane"] == "a" for r in records)
    assert "decisionId" not in err.read_text()


@pytest.mark.timeout(180)
def test_a_log_reader_that_stops_reading_never_holds_up_a_request(tmp_path: Path) -> None:
    with SimulatedProvider(model="a") as sim:
        path = tmp_path / "config.json"
        path.write_text(text(policy_doc({"a": lane(sim.url)}, {"main": ["a"]})))
        cmd = [sys.executable, "-m", "laneway", "serve", "--config", str(path), "--port", "0",
               "--secrets-dir", str(tmp_path / "secrets")]
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert process.stderr is not None
            url = ""
            while not url:
                line = process.stderr.readline().decode()
                assert line, "laneway serve exited before listening"
                if found := re.search(r"listening on (http://\S+)", line):
                    url = found.group(1)
            # From here on nobody reads its standard output or error: a pipe holds 64 KB, far
            # less than the decision and feedback lines below (the diagnostic log's own thread
            # is tested in tests/unit/test_serve_logging.py).
            ids = []
            for n in range(2000):
                ids.append(_post(url + "/v1/chat/completions", {
                    "model": "auto", "messages": [{"role": "user", "content": f"hi {n}"}],
                })["x-laneway-decision-id"])
                _post(url + "/v1/feedback", {"decision_id": ids[-1], "outcome": "accepted"})
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)

    assert process.returncode == 0
    lines = [json.loads(line) for line in out.decode().splitlines()]
    # Nothing lost: the lines waited for their reader, each request's feedback after it.
    assert [r["decisionId"] for r in lines if "feedback" not in r] == ids
    assert [r["decisionId"] for r in lines if "feedback" in r] == ids
    assert "Stopping: finishing in-flight requests" in err.decode()


def _post(url: str, body: dict[str, Any]) -> dict[str, str]:
    """POST JSON; the answer's headers (it must be a 200)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        resp.read()
        assert resp.status == 200
        return dict(resp.headers)
