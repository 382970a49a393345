"""Helpers for the operator's integration tests: the operator as a real process, manifests, waits.

Used by `test_operator*.py`, `test_webhook.py` and `test_config_delivery.py`. The operator runs as
`laneway operator --standalone -n <test namespace>` in a subprocess with the control plane's
KUBECONFIG, exactly as a user would run it; its log is printed when a test fails.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.controlplane.plane import ControlPlane

T = TypeVar("T")
LANEWAY = str(Path(sys.executable).with_name("laneway"))
HOLD_DOWN_S = 2.0
FAST_PROBE = {"interval": "1s", "timeout": "500ms", "failureThreshold": 2, "successThreshold": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class OperatorProcess:
    """`laneway operator` as a subprocess, with its log in a file."""

    def __init__(self, plane: ControlPlane, log_path: Path, args: list[str],
                 env: Mapping[str, str] | None = None) -> None:
        self.plane = plane
        self.log_path = log_path
        self.args = args
        self.env = {**plane.env, "LANEWAY_HOLD_DOWN_SECONDS": str(HOLD_DOWN_S), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0

    def start(self) -> OperatorProcess:
        self.metrics_port = free_port()
        cmd = [LANEWAY, "--log-level", "INFO", "operator", "--metrics-port",
               str(self.metrics_port), *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        wait_for(self.ready, timeout=30, what="the operator's /readyz")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log()}")
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def stop(self) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in 20 s. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_operator(plane: ControlPlane, tmp_path: Path, namespace: str, *extra: str,
                   env: Mapping[str, str] | None = None, name: str = "operator",
                   standalone: bool = True) -> OperatorProcess:
    args = ["-n", namespace, *(["--standalone"] if standalone else []), *extra]
    return OperatorProcess(plane, tmp_path / f"{name}.log", args, env).start()


def operator_fleet(controlplane: ControlPlane, namespace: str,
                   request: pytest.FixtureRequest) -> Iterator[list[OperatorProcess]]:
    """Body of each test module's `operators` fixture: the operators a test starts. On teardown
    their objects are deleted, they are stopped, and their logs printed if the test failed."""
    started: list[OperatorProcess] = []
    yield started
    # Delete while an operator runs, so it can release its finalizers.
    if any(op.proc is not None and op.proc.poll() is None for op in started):
        controlplane.kubectl("delete", "routingpolicies,modellanes", "--all", "-n", namespace,
                             "--timeout=30s", check=False)
    for op in started:
        op.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for op in started:
            print(f"\n--- {op.log_path.name} ---\n{op.log()[-20000:]}")


# -- objects ------------------------------------------------------------------------------------


def apply(plane: ControlPlane, *docs: Mapping[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def secret(namespace: str, name: str = "provider", key: str = "apiKey",
           value: str = "sk-test-key") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "stringData": {key: value}}


def lane(namespace: str, name: str, base_url: str, *, secret_name: str = "provider",
         api: str = "openai", probe: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "routing.laneway.dev/v1alpha1",
        "kind": "ModelLane",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": {"type": api, "baseURL": base_url, "model": name,
                         "apiKeySecretRef": {"name": secret_name, "key": "apiKey"}},
            "pricing": {"inputPerMillion": 1.0, "outputPerMillion": 2.0},
            "limits": {"contextWindow": 16000, "maxOutputTokens": 1000},
            "capabilities": ["tools", "streaming"],
            "healthProbe": dict(probe or FAST_PROBE),
        },
    }


def policy(namespace: str, name: str, routes: Mapping[str, list[str]],
           **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routing.laneway.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "mode": "enforce",
            "routes": [{"name": r, "lanes": lanes} for r, lanes in routes.items()],
            "defaultRoute": next(iter(routes)),
            **spec,
        },
    }


def condition(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def events(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    proc = plane.kubectl("get", "events", "-n", namespace, "-o", "json",
                         "--field-selector", f"involvedObject.name={name}")
    return list(json.loads(proc.stdout)["items"])


def wait_for_default_account(plane: ControlPlane, namespace: str) -> None:
    wait_for(lambda: get(plane, "serviceaccount", "default", namespace), timeout=30,
             what=f"the default ServiceAccount in {namespace}")


# -- the API as a given identity -------------------------------------------------------------


def api_get(plane: ControlPlane, path: str, token: str | None = None) -> tuple[int, Any]:
    """GET `path` from the API server with `token` (default: admin); (status, JSON body)."""
    ctx = ssl.create_default_context(cafile=str(plane.ca_file))
    req = urllib.request.Request(
        plane.api_url + path, headers={"Authorization": f"Bearer {token or plane.admin_token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
