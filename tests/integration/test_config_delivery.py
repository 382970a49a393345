"""Config delivery: operator -> ConfigMap -> API watch -> a running `laneway serve`, timed.

The sidecar runs as a real `laneway serve --watch-configmap` process that authenticates with a
real ServiceAccount token (TokenRequest) for the account the operator bound, through a TCP relay
the test can cut to play an unreachable API server.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router_sidecar.config import load_config_text
from router_sidecar.simulator import SimulatedProvider
from tests.controlplane.plane import ControlPlane
from tests.integration.operator_harness import (
    HOLD_DOWN_S,
    LANEWAY,
    OperatorProcess,
    api_get,
    apply,
    free_port,
    get,
    lane,
    operator_fleet,
    policy,
    secret,
    start_operator,
    wait_for,
    wait_for_default_account,
)

pytestmark = pytest.mark.controlplane

DELIVERY_BUDGET_S = 2.0


class TcpRelay:
    """Forwards 127.0.0.1:port to a target; `cut()` drops it and every open connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        for sock in [self._listener, *self._open]:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Setup:
    plane: ControlPlane
    namespace: str
    primary: SimulatedProvider
    backup: SimulatedProvider
    operator: OperatorProcess
    relay: TcpRelay
    token: str
    sidecar_port: int
    sidecar: subprocess.Popen[bytes]
    sidecar_log: Path

    def call(self, method: str, path: str, body: dict[str, Any] | None = None
             ) -> tuple[dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.sidecar_port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(resp.headers), json.loads(resp.read())

    def serving(self) -> str:
        return self.call("GET", "/readyz")[1]["configVersion"]

    def explained_lane(self) -> str:
        return self.call("POST", "/v1/route/explain", CHAT)[1]["lane"]

    def configmap_version(self) -> str | None:
        status, cm = api_get(self.plane, f"/api/v1/namespaces/{self.namespace}/configmaps/"
                             "laneway-bot")
        return cm["metadata"]["annotations"]["routing.laneway.dev/config-version"] if (
            status == 200) else None

    def configmap_phase(self, lane_name: str) -> str:
        _, cm = api_get(self.plane, f"/api/v1/namespaces/{self.namespace}/configmaps/laneway-bot")
        return load_config_text(cm["data"]["config.json"]).lanes[lane_name].phase


CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def operators(
    controlplane: ControlPlane, crds: list[str], namespace: str, request: pytest.FixtureRequest
) -> Iterator[list[OperatorProcess]]:
    yield from operator_fleet(controlplane, namespace, request)


@pytest.fixture
def setup(
    controlplane: ControlPlane,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Setup]:
    wait_for_default_account(controlplane, namespace)
    with SimulatedProvider(model="primary") as primary, SimulatedProvider(model="backup") as backup:
        apply(controlplane, secret(namespace), lane(namespace, "primary", primary.url),
              lane(namespace, "backup", backup.url),
              policy(namespace, "bot", {"fast": ["primary", "backup"]}),
              {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "bot-sa", "namespace": namespace}})
        apply(controlplane, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app", "namespace": namespace,
                         "labels": {"routing.laneway.dev/policy": "bot"}},
            "spec": {"serviceAccountName": "bot-sa",
                     "containers": [{"name": "app", "image": "app:1"}]}})
        operator = start_operator(controlplane, tmp_path, namespace)
        operators.append(operator)

        # The operator binds the pod's ServiceAccount and writes a config with both lanes up.
        wait_for(lambda: [s for s in (get(controlplane, "rolebinding", "laneway-config-bot",
                                          namespace) or {}).get("subjects") or []
                          if s["name"] == "bot-sa"], timeout=30, what="bot-sa bound")
        wait_for(lambda: (cm := get(controlplane, "configmap", "laneway-bot", namespace))
                 and '"phase": "Healthy"' in cm["data"]["config.json"]
                 and '"phase": "Unknown"' not in cm["data"]["config.json"],
                 timeout=30, what="a config with both lanes Healthy")

        token = controlplane.kubectl("create", "token", "bot-sa", "-n", namespace,
                                     "--duration", "1h").stdout.strip()
        (tmp_path / "token").write_text(token)
        cm = get(controlplane, "configmap", "laneway-bot", namespace)
        (tmp_path / "config.json").write_text(cm["data"]["config.json"])  # the mounted file
        (tmp_path / "secrets" / "provider").mkdir(parents=True)
        (tmp_path / "secrets" / "provider" / "apiKey").write_text("sk-test-key")
        relay = TcpRelay(controlplane.api_port)
        relay.start()

        port = free_port()
        log_path = tmp_path / "sidecar.log"
        with open(log_path, "wb") as log:
            sidecar = subprocess.Popen(
                [LANEWAY, "serve", "--config", str(tmp_path / "config.json"), "--port", str(port),
                 "--secrets-dir", str(tmp_path / "secrets"),
                 "--watch-configmap", f"{namespace}/laneway-bot",
                 "--kube-api-url", f"https://127.0.0.1:{relay.port}",
                 "--kube-token-file", str(tmp_path / "token"),
                 "--kube-ca-file", str(controlplane.ca_file)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        env = Setup(controlplane, namespace, primary, backup, operator, relay, token, port,
                    sidecar, log_path)
        try:
            wait_for(lambda: _ready(env), timeout=20, what="the sidecar's /readyz")
            yield env
        finally:
            sidecar.send_signal(signal.SIGTERM)
            try:
                sidecar.wait(timeout=15)
            except subprocess.TimeoutExpired:
                sidecar.kill()
            relay.cut()
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                print(f"\n--- sidecar.log ---\n{log_path.read_text(errors='replace')[-10000:]}")


def _ready(env: Setup) -> bool:
    if env.sidecar.poll() is not None:
        raise AssertionError(f"laneway serve exited:\n{env.sidecar_log.read_text()}")
    try:
        return bool(env.serving())
    except (urllib.error.URLError, OSError):
        return False


def _when(check: Any, what: str, timeout: float = 20) -> float:
    """Poll `check` every 50 ms; the monotonic time it first held."""
    wait_for(check, timeout=timeout, what=what, interval=0.05)
    return time.monotonic()


def test_a_lane_outage_reaches_the_running_sidecar_within_two_seconds(setup: Setup) -> None:
    assert setup.explained_lane() == "primary"
    headers, _ = setup.call("POST", "/v1/chat/completions", CHAT)
    assert headers["x-laneway-lane"] == "primary"

    setup.primary.set_mode("down")
    t_down = time.monotonic()
    t_cm = _when(lambda: setup.configmap_phase("primary") == "Down", "the config to mark Down")
    version = setup.configmap_version()
    t_sidecar = _when(lambda: setup.serving() == version, "the sidecar to serve it")
    print(f"\nprimary down -> ConfigMap updated in {t_cm - t_down:.2f}s; "
          f"ConfigMap -> sidecar serving it in {t_sidecar - t_cm:.2f}s")
    assert t_sidecar - t_cm < DELIVERY_BUDGET_S

    # The sidecar goes straight to the backup: the Down primary is not even tried, and the
    # response still counts the move as a fallback (so fallback-rate dashboards see the outage).
    assert setup.explained_lane() == "backup"
    tried_before = setup.primary.state["requests"]
    headers, _ = setup.call("POST", "/v1/chat/completions", CHAT)
    assert (headers["x-laneway-lane"], headers["x-laneway-fallbacks"]) == ("backup", "1")
    assert setup.primary.state["requests"] == tried_before

    setup.primary.set_mode("ok")
    t_ok = time.monotonic()
    t_cm = _when(lambda: setup.configmap_phase("primary") == "Healthy",
                 "the config to restore the primary")
    version = setup.configmap_version()
    t_sidecar = _when(lambda: setup.serving() == version, "the sidecar to serve it")
    print(f"primary ok -> ConfigMap restored in {t_cm - t_ok:.2f}s (hold-down {HOLD_DOWN_S:g}s); "
          f"ConfigMap -> sidecar serving it in {t_sidecar - t_cm:.2f}s")
    assert t_cm - t_ok >= HOLD_DOWN_S
    assert t_sidecar - t_cm < DELIVERY_BUDGET_S
    assert setup.explained_lane() == "primary"


def test_the_sidecar_token_reads_its_own_configmap_and_nothing_else(setup: Setup) -> None:
    ns = setup.namespace
    apply(setup.plane, {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "other", "namespace": ns}, "data": {"a": "b"}})
    base = f"/api/v1/namespaces/{ns}/configmaps"

    assert api_get(setup.plane, f"{base}/laneway-bot", setup.token)[0] == 200
    status, listed = api_get(setup.plane, f"{base}?fieldSelector=metadata.name%3Dlaneway-bot",
                             setup.token)
    assert status == 200 and [i["metadata"]["name"] for i in listed["items"]] == ["laneway-bot"]
    assert api_get(setup.plane, f"{base}/other", setup.token)[0] == 403
    assert api_get(setup.plane, base, setup.token)[0] == 403
    assert api_get(setup.plane, f"/api/v1/namespaces/{ns}/secrets/provider", setup.token)[0] == 403
    assert api_get(setup.plane, f"/api/v1/namespaces/{ns}/pods", setup.token)[0] == 403


def test_the_sidecar_keeps_serving_through_an_api_and_operator_outage_then_catches_up(
    setup: Setup,
) -> None:
    before = setup.serving()
    setup.relay.cut()
    assert setup.operator.stop() == 0
    time.sleep(2)

    assert setup.serving() == before
    assert setup.explained_lane() == "primary"
    assert "Cannot follow ConfigMap" in setup.sidecar_log.read_text()

    # Both come back; a policy change made meanwhile reaches the sidecar.
    apply(setup.plane, policy(setup.namespace, "bot", {"fast": ["primary", "backup"],
                                                       "strong": ["backup"]}))
    setup.relay.start()
    setup.operator.start()
    changed = wait_for(lambda: (v := setup.configmap_version()) != before and v, timeout=30,
                       what="the operator to compile the change")
    wait_for(lambda: setup.serving() == changed, timeout=40, what="the sidecar to catch up")
    assert "Following ConfigMap" in setup.sidecar_log.read_text()
    models = {m["id"] for m in setup.call("GET", "/v1/models")[1]["data"]}
    assert "strong" in models
