"""The Helm chart against the real test control plane: install, upgrade, uninstall, RBAC, webhook.

Uses the `controlplane` and `namespace` fixtures from `tests/conftest.py` and the real `helm` and
`kubectl`. Pods never run here (there is no kubelet), so nothing waits for the operator; these
tests prove what the chart itself is responsible for. Every install restricts the webhook to a
namespace nobody has (or to one namespace the test creates), so its failurePolicy Fail can never
block another test's pods, and every release is uninstalled afterwards.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.plane import ControlPlane

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "laneway"
NO_NAMESPACE = {"matchLabels": {"laneway.dev/helm-test-inject": "never"}}
# Prometheus Operator and cert-manager kinds: their CRDs are not in the test cluster.
THIRD_PARTY_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")


@dataclass
class Release:
    """A chart release installed by a test, and how to reach it."""

    plane: ControlPlane
    name: str
    namespace: str
    values: Path

    @property
    def fullname(self) -> str:
        return f"{self.name}-laneway"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.plane.helm(*args, "--namespace", self.namespace, check=check)

    def upgrade(self, *sets: str) -> None:
        set_args = [a for pair in sets for a in ("--set", pair)]
        self.helm("upgrade", self.name, str(CHART), "-f", str(self.values), *set_args)

    def manifest(self) -> list[dict[str, Any]]:
        out = self.helm("get", "manifest", self.name).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns_args = ["-n", namespace] if namespace else []
        out = self.plane.kubectl("get", kind, name, *ns_args, "-o", "json").stdout
        return dict(json.loads(out))


Installer = Callable[..., Release]


def write_values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def install(controlplane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Installer]:
    """Install the chart into the test's namespace with extra values; uninstall afterwards."""
    releases: list[Release] = []

    def run(**values: Any) -> Release:
        values.setdefault("webhook", {}).setdefault("namespaceSelector", NO_NAMESPACE)
        release = Release(
            plane=controlplane,
            name=f"lw-{namespace[-6:]}",
            namespace=namespace,
            values=write_values(tmp_path / "values.yaml", values),
        )
        release.helm("install", release.name, str(CHART), "-f", str(release.values))
        releases.append(release)
        return release

    yield run
    for release in releases:
        release.helm("uninstall", release.name, "--wait=false", check=False)


# -- install, upgrade, uninstall ---------------------------------------------------------------


def test_install_creates_every_object_of_the_release(install: Installer) -> None:
    release = install()
    objects = release.manifest()

    kinds = {obj["kind"] for obj in objects}
    assert {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
        "Secret", "MutatingWebhookConfiguration", "PodDisruptionBudget", "ClusterKopfPeering",
    } <= kinds  # fmt: skip
    for obj in objects:
        meta = obj["metadata"]
        found = release.get(obj["kind"], meta["name"], meta.get("namespace"))
        assert found["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
    for crd in ("modellanes.routing.laneway.dev", "clusterkopfpeerings.kopf.dev"):
        release.get("crd", crd)


def test_upgrade_keeps_the_webhook_certificate_and_applies_new_values(install: Installer) -> None:
    release = install()
    secret_name = f"{release.fullname}-webhook-tls"
    before = release.get("secret", secret_name, release.namespace)["data"]

    release.upgrade("operator.logLevel=DEBUG")

    after = release.get("secret", secret_name, release.namespace)["data"]
    webhook = release.get("mutatingwebhookconfiguration", release.fullname)
    deploy = release.get("deployment", release.fullname, release.namespace)
    assert after == before
    assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == before["ca.crt"]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--log-level", "DEBUG"]


def test_uninstall_removes_the_release_but_keeps_the_crds(install: Installer) -> None:
    release = install()
    cluster_objects = [
        (o["kind"], o["metadata"]["name"])
        for o in release.manifest()
        if "namespace" not in o["metadata"]
    ]

    release.helm("uninstall", release.name, "--wait=false")

    for kind, name in cluster_objects:
        got = release.plane.kubectl("get", kind, name, check=False)
        assert "NotFound" in got.stderr, f"{kind} {name} survived the uninstall"
    release.get("crd", "modellanes.routing.laneway.dev")
    release.get("crd", "kopfpeerings.kopf.dev")


def test_every_rendered_object_passes_the_api_servers_dry_run(
    controlplane: ControlPlane, namespace: str
) -> None:
    scenario = REPO / "tests" / "unit" / "chart-values" / "everything-on.yaml"
    rendered = controlplane.helm(
        "template", "dry", str(CHART), "--namespace", namespace, "-f", str(scenario),
        "--set", f"operator.watchNamespaces={{{namespace}}}",
    ).stdout  # fmt: skip
    objects = [
        o for o in yaml.safe_load_all(rendered)
        if o and not o["apiVersion"].startswith(THIRD_PARTY_GROUPS)
    ]  # fmt: skip

    proc = controlplane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input=yaml.safe_dump_all(objects), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(objects)


# -- the webhook, as the API server applies it -------------------------------------------------


def test_webhook_applies_only_to_labelled_pods_in_selected_namespaces(
    controlplane: ControlPlane, namespace: str, install: Installer
) -> None:
    app_ns = f"{namespace[:50]}-app"
    controlplane.kubectl("create", "namespace", app_ns)
    try:
        # Select both namespaces: the built-in exclusion must still protect the release's own.
        both = {
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": [app_ns, namespace],
        }
        install(webhook={"namespaceSelector": {"matchExpressions": [both]}})
        wait_for_default_service_account(controlplane, app_ns)
        wait_for_default_service_account(controlplane, namespace)

        plain = create_pod(controlplane, app_ns, "plain", labels={})
        # No operator pod runs here, so a labelled pod in a selected namespace must be refused
        # (failurePolicy Fail) rather than start without its sidecar.
        labelled = create_pod(controlplane, app_ns, "labelled", labels=POLICY_LABEL)
        in_release_ns = create_pod(controlplane, namespace, "labelled", labels=POLICY_LABEL)
    finally:
        controlplane.kubectl("delete", "namespace", app_ns, "--wait=false", check=False)

    assert plain.returncode == 0, plain.stderr
    assert labelled.returncode != 0
    assert 'failed calling webhook "sidecar.routing.laneway.dev"' in labelled.stderr
    assert in_release_ns.returncode == 0, in_release_ns.stderr


POLICY_LABEL = {"routing.laneway.dev/policy": "support-bot"}


def create_pod(
    plane: ControlPlane, namespace: str, name: str, labels: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }
    return plane.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)


def wait_for_default_service_account(plane: ControlPlane, namespace: str) -> None:
    """kube-controller-manager creates each namespace's `default` ServiceAccount shortly after."""
    deadline = time.monotonic() + 30
    while plane.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode:
        assert time.monotonic() < deadline, f"no default ServiceAccount in {namespace}"
        time.sleep(0.5)


# -- RBAC with the chart's own ServiceAccount token --------------------------------------------

# (verb, resource, subresource, namespaced): what the operator needs.
OPERATOR_NEEDS = [
    *[(v, "routingpolicies.routing.laneway.dev", "", True) for v in ("get", "list", "watch")],
    *[(v, "modellanes.routing.laneway.dev", "", True) for v in ("patch", "update", "watch")],
    ("patch", "routingpolicies.routing.laneway.dev", "status", True),
    ("update", "modellanes.routing.laneway.dev", "status", True),
    ("update", "routingpolicies.routing.laneway.dev", "finalizers", True),
    *[(v, "configmaps", "", True) for v in ("get", "watch", "create", "update", "delete")],
    *[(v, "secrets", "", True) for v in ("get", "list", "watch")],
    ("list", "pods", "", True),
    ("create", "roles.rbac.authorization.k8s.io", "", True),
    ("update", "rolebindings.rbac.authorization.k8s.io", "", True),
    ("create", "events", "", True),
    ("patch", "events.events.k8s.io", "", True),
    ("patch", "kopfpeerings.kopf.dev", "", True),
    ("patch", "clusterkopfpeerings.kopf.dev", "", False),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "", False),
]
OPERATOR_MUST_NOT = [
    *[(v, "secrets", "", True) for v in ("create", "update", "patch", "delete")],
    *[(v, "deployments.apps", "", True) for v in ("get", "create", "patch", "delete")],
    ("create", "daemonsets.apps", "", True),
    ("create", "statefulsets.apps", "", True),
    ("create", "jobs.batch", "", True),
    ("create", "pods", "", True),
    ("delete", "pods", "", True),
    ("create", "clusterroles.rbac.authorization.k8s.io", "", False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
    ("bind", "roles.rbac.authorization.k8s.io", "", True),
    ("escalate", "roles.rbac.authorization.k8s.io", "", True),
    ("impersonate", "serviceaccounts", "", True),
    ("delete", "namespaces", "", False),
    ("create", "namespaces", "", False),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", False),
]


def can_i(
    plane: ControlPlane, token: str, namespace: str, check: tuple[str, str, str, bool]
) -> bool:
    verb, resource, subresource, namespaced = check
    args = ["auth", "can-i", verb, resource, "--token", token]
    args += ["-n", namespace] if namespaced else []
    args += [f"--subresource={subresource}"] if subresource else []
    answer = plane.kubectl(*args, check=False).stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {answer!r}"
    return answer == "yes"


def answers(
    plane: ControlPlane, token: str, namespace: str, checks: list[tuple[str, str, str, bool]]
) -> dict[str, bool]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda c: can_i(plane, token, namespace, c), checks)
        return {" ".join(filter(None, c[:3])): ok for c, ok in zip(checks, results, strict=True)}


def service_account_token(release: Release) -> str:
    """A TokenRequest token for the chart's ServiceAccount, as the operator pod would get."""
    out = release.plane.kubectl("create", "token", release.fullname, "-n", release.namespace)
    return out.stdout.strip()


def test_service_account_may_do_what_the_operator_needs_and_nothing_more(
    install: Installer, namespace: str
) -> None:
    release = install()
    token = service_account_token(release)

    allowed = answers(release.plane, token, namespace, OPERATOR_NEEDS)
    denied = answers(release.plane, token, namespace, OPERATOR_MUST_NOT)

    assert [check for check, ok in allowed.items() if not ok] == []
    assert [check for check, ok in denied.items() if ok] == []


def test_the_token_reads_secrets_but_the_api_server_refuses_to_let_it_write_them(
    install: Installer, namespace: str
) -> None:
    release = install()
    token = service_account_token(release)
    plane = release.plane

    # Only return codes and messages are compared, so the token never shows in a failure report.
    listed = plane.kubectl("get", "secrets", "-n", namespace, "--token", token, check=False)
    created = plane.kubectl(
        "create", "secret", "generic", "stolen", "--from-literal=k=v",
        "-n", namespace, "--token", token, check=False,
    )  # fmt: skip
    listed_ok, create_refused = listed.returncode == 0, created.returncode != 0

    assert listed_ok, listed.stderr
    assert create_refused, created.stdout
    assert "forbidden" in created.stderr.lower()


def test_watch_namespaces_limits_secret_access_to_those_namespaces(
    install: Installer, namespace: str
) -> None:
    release = install(operator={"watchNamespaces": [namespace]})
    token = service_account_token(release)
    read_secrets = ("get", "secrets", "", True)
    plane = release.plane

    # Collected first, so a failure shows the answers and never the token.
    got = {
        "secrets in the watched namespace": can_i(plane, token, namespace, read_secrets),
        "secrets in default": can_i(plane, token, "default", read_secrets),
        "list namespaces": can_i(plane, token, "", ("list", "namespaces", "", False)),
        "delete namespaces": can_i(plane, token, "", ("delete", "namespaces", "", False)),
        "peering": can_i(plane, token, namespace, ("patch", "kopfpeerings.kopf.dev", "", True)),
    }

    assert got == {
        "secrets in the watched namespace": True,
        "secrets in default": False,
        "list namespaces": True,
        "delete namespaces": False,
        "peering": True,
    }
