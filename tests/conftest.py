"""Fixtures shared by every suite: the real control plane, CRDs, and a namespace per test.

`controlplane` (session) starts etcd, kube-apiserver and kube-controller-manager from
`tests/controlplane` on free loopback ports and stops them at the end, also when tests fail.
`crds` applies `crds/` and waits until both are Established. `namespace` gives each test a fresh
namespace and deletes it afterwards; when the test failed, the namespace's events are printed.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.plane import ControlPlane, binaries_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(workdir=tmp_path_factory.mktemp("controlplane"), bin_dir=binaries_dir())
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def crds(controlplane: ControlPlane) -> list[str]:
    """Apply the CRDs as users do (`kubectl apply -f crds/`) and wait until they are served."""
    controlplane.kubectl("apply", "-f", str(REPO / "crds"))
    names = json.loads(controlplane.kubectl("get", "-f", str(REPO / "crds"), "-o", "json").stdout)
    crd_names = [item["metadata"]["name"] for item in names["items"]]
    for name in crd_names:
        controlplane.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s"
        )
    return crd_names


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def namespace(controlplane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; its events are shown if the test fails."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    controlplane.kubectl("create", "namespace", name)
    controlplane.kubectl("label", "namespace", name, "laneway-test=true")
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        events = controlplane.kubectl(
            "get", "events", "-n", name, "--sort-by=.lastTimestamp", check=False
        )
        print(f"\n--- events in namespace {name} ---\n{events.stdout}{events.stderr}")
    controlplane.kubectl("delete", "namespace", name, "--wait=false", check=False)
