"""Smoke tests that prove the test control plane is a real Kubernetes API server.

Each test uses only kubectl and the API, the way users and the operator meet the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.controlplane.plane import ControlPlane, process_alive

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.laneway.dev}
spec:
  group: smoke.laneway.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, minimum: 1}
"""


def _json(plane: ControlPlane, *args: str) -> dict:
    return json.loads(plane.kubectl(*args, "-o", "json").stdout)


def test_a_configmap_applied_with_kubectl_reads_back_the_same(
    controlplane: ControlPlane, namespace: str
) -> None:
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "greeting", "namespace": namespace},
            "data": {"hello": "world"},
        }
    )
    controlplane.kubectl("apply", "-f", "-", input=manifest)

    got = _json(controlplane, "get", "configmap", "greeting", "-n", namespace)
    assert got["data"] == {"hello": "world"}
    assert got["metadata"]["uid"]


def test_a_custom_resource_round_trips_and_its_schema_is_enforced(
    controlplane: ControlPlane, namespace: str
) -> None:
    controlplane.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    controlplane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.laneway.dev", "--timeout=60s"
    )
    good = {
        "apiVersion": "smoke.laneway.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": namespace},
        "spec": {"size": 3},
    }
    controlplane.kubectl("apply", "-f", "-", input=json.dumps(good))
    assert _json(controlplane, "get", "widget", "w1", "-n", namespace)["spec"] == {"size": 3}

    bad = dict(good, metadata={"name": "w2", "namespace": namespace}, spec={"size": 0})
    proc = controlplane.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert "spec.size" in proc.stderr and "should be greater than or equal to 1" in proc.stderr


def test_a_serviceaccount_token_is_denied_until_a_rolebinding_grants_access(
    controlplane: ControlPlane, namespace: str
) -> None:
    controlplane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = controlplane.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    assert token.count(".") == 2  # a signed JWT from the TokenRequest API

    def list_configmaps() -> subprocess.CompletedProcess[str]:
        return controlplane.kubectl(
            "get", "configmaps", "-n", namespace, "--token", token, "--user", "", check=False
        )

    denied = list_configmaps()
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr

    controlplane.kubectl(
        "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", namespace
    )
    controlplane.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    deadline = time.monotonic() + 10
    while (allowed := list_configmaps()).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # RBAC caches refresh within a moment
    assert allowed.returncode == 0, allowed.stderr


def test_a_watch_sees_an_update(controlplane: ControlPlane, namespace: str) -> None:
    controlplane.kubectl("create", "configmap", "watched", "--from-literal=v=1", "-n", namespace)
    watcher = subprocess.Popen(
        [
            str(controlplane.bin_dir / "kubectl"),
            "--kubeconfig",
            str(controlplane.kubeconfig),
            "get",
            "configmap",
            "watched",
            "-n",
            namespace,
            "--watch-only",
            "-o",
            'jsonpath={.data.v}{"\\n"}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # let the watch open before the change
        controlplane.kubectl(
            "patch", "configmap", "watched", "-n", namespace, "-p", '{"data":{"v":"2"}}'
        )
        assert watcher.stdout is not None
        line = watcher.stdout.readline().strip()
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert line == "2"


def test_a_configmap_owned_by_another_object_is_garbage_collected(
    controlplane: ControlPlane, namespace: str
) -> None:
    controlplane.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = _json(controlplane, "get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
    }
    controlplane.kubectl("apply", "-f", "-", input=json.dumps(owned))
    controlplane.kubectl("delete", "configmap", "owner", "-n", namespace)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if controlplane.kubectl(
            "get", "configmap", "owned", "-n", namespace, check=False
        ).returncode:
            return
        time.sleep(0.5)
    pytest.fail("the owned ConfigMap was not garbage-collected within 60s")


def test_deployments_get_replicasets_and_pending_pods(
    controlplane: ControlPlane, namespace: str
) -> None:
    controlplane.kubectl(
        "create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace
    )
    deadline = time.monotonic() + 60
    pods: list[dict] = []
    while time.monotonic() < deadline and not pods:
        pods = _json(controlplane, "get", "pods", "-n", namespace, "-l", "app=web")["items"]
        time.sleep(0.5)
    assert pods, "the controller manager did not create the Deployment's pod"
    assert pods[0]["status"]["phase"] == "Pending"  # no nodes: pods are never scheduled


def test_make_controlplane_prints_a_working_kubeconfig_and_stop_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    env = dict(os.environ, LANEWAY_CONTROLPLANE_DIR=str(tmp_path / "plane"))
    repo = Path(__file__).resolve().parents[2]

    def make(target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "-C", str(repo), target],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    started = make("controlplane")
    try:
        assert started.returncode == 0, started.stderr
        kubeconfig = started.stdout.strip().splitlines()[-1]
        plane = ControlPlane.from_state(tmp_path / "plane")
        assert plane is not None
        assert kubeconfig == str(plane.kubeconfig)
        namespaces = plane.kubectl("get", "namespaces", "-o", "name").stdout.split()
        assert "namespace/kube-system" in namespaces
        pids = list(plane.pids.values())
        assert len(pids) == 3
    finally:
        stopped = make("controlplane-stop")
    assert stopped.returncode == 0, stopped.stderr
    # Every process exited (a zombie still waiting for its reaper counts as exited).
    assert not any(process_alive(pid) for pid in pids)
