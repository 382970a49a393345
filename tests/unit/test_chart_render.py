"""The Helm chart rendered offline with the real `helm` binary: lint and template.

`helm lint` and `helm template` for every values scenario in `chart-values/`, the known kinds and
required fields of everything rendered, the operator Deployment's contract (arguments, probes,
security), the options each scenario passes through, the install notes and the 63-character name
limit. Fixtures and helpers come from `chart_helpers.py`; the same chart against a real API
server is in `tests/integration/test_helm.py`.
"""

from __future__ import annotations

import re

import pytest

from tests.unit.chart_helpers import (
    CHART,
    CLUSTER_SCOPED,
    KNOWN_KINDS,
    NAMESPACE,
    OPERATOR_ARGS,
    SCENARIO_DIR,
    SCENARIOS,
    Helm,
    Render,
    kinds,
    only,
    template_args,
)

# `helm` and `render` are fixtures: importing each under its own name registers it here.
from tests.unit.chart_helpers import helm as helm
from tests.unit.chart_helpers import render as render

# -- lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_passes_helm_lint_strictly(helm: Helm, scenario: str) -> None:
    proc = helm("lint", str(CHART), "--strict", "-f", str(SCENARIO_DIR / f"{scenario}.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_has_a_known_kind_and_the_required_fields(
    render: Render, scenario: str
) -> None:
    for obj in render(scenario):
        kind, meta = obj["kind"], obj["metadata"]
        assert obj["apiVersion"] == KNOWN_KINDS.get(kind), f"{kind} {meta.get('name')}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        assert ("namespace" in meta) == (kind not in CLUSTER_SCOPED), f"{kind} {meta['name']}"
        if kind != "CustomResourceDefinition":
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", meta["name"]
        if kind == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert {"name", "image", "resources", "securityContext"} <= container.keys()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_service_and_selector_points_at_the_operator_pods(
    render: Render, scenario: str
) -> None:
    objects = render(scenario)
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [o["spec"]["selector"] for o in objects if o["kind"] == "Service"]
    selectors += [
        o["spec"]["selector"]["matchLabels"]
        for o in objects
        if o["kind"] in ("PodDisruptionBudget", "ServiceMonitor", "Deployment")
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()


def test_defaults_render_the_operator_deployment_of_the_contract(
    render: Render,
) -> None:
    deploy = only(render(), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}

    assert deploy["spec"]["replicas"] == 2
    assert container["image"] == "laneway:0.1.0"
    assert container["args"] == OPERATOR_ARGS
    assert env["LANEWAY_SIDECAR_IMAGE"]["value"] == "laneway:0.1.0"
    assert env["LANEWAY_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["LANEWAY_PEERING_NAME"]["value"] == "laneway"
    assert env["LANEWAY_HOLD_DOWN_SECONDS"]["value"] == "30"
    assert not [name for name in env if name.startswith("LANEWAY_EGRESS_")]
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "webhook": 9443}


def test_defaults_run_the_operator_unprivileged_on_a_read_only_filesystem(
    render: Render,
) -> None:
    pod = only(render(), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/certs": "webhook-certs"}


def test_everything_on_passes_every_option_through(
    render: Render,
) -> None:
    objects = render("everything-on")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert container["image"].endswith("/laneway@sha256:" + "0123456789abcdef" * 4)
    assert env["LANEWAY_SIDECAR_IMAGE"] == "registry.example.com/platform/laneway-sidecar:0.1.0"
    assert env["LANEWAY_EGRESS_HTTPS_PROXY"] == env["LANEWAY_EGRESS_HTTP_PROXY"] == (
        "http://proxy.corp.example:3128"
    )
    assert env["LANEWAY_EGRESS_NO_PROXY"] == ".svc,.cluster.local,10.0.0.0/8"
    assert not {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"} & set(env)  # the API client's own path
    assert env["LANEWAY_EGRESS_PROXY_SECRET"] == "egress-proxy"
    assert env["LANEWAY_EGRESS_PROXY_CREDENTIALS"] == "/var/run/secrets/laneway-egress-proxy"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["egress-proxy-credentials"]["secret"]["secretName"] == "egress-proxy"
    assert volumes["egress-proxy-credentials"]["secret"]["optional"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["egress-proxy-credentials"] == env["LANEWAY_EGRESS_PROXY_CREDENTIALS"]
    assert container["args"][:2] == ["--log-level", "DEBUG"]
    assert env["LANEWAY_HOLD_DOWN_SECONDS"] == "5"
    assert "--webhook-port" in container["args"] and "10443" in container["args"]
    assert pod["serviceAccountName"] == "laneway-operator"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert only(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert only(objects, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] == "15s"
    assert only(objects, "ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    assert only(objects, "PodMonitor")["spec"]["namespaceSelector"] == {"any": True}
    assert only(objects, "ConfigMap")["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {"PrometheusRule", "Secret", "MutatingWebhookConfiguration"} <= kinds(objects)


def test_a_single_replica_gets_no_disruption_budget_and_keeps_custom_affinity(
    render: Render,
) -> None:
    objects = render("single-replica")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]

    assert "PodDisruptionBudget" not in kinds(objects)
    assert list(pod["affinity"]) == ["nodeAffinity"]


def test_disabled_webhook_leaves_out_the_webhook_and_its_arguments(
    render: Render,
) -> None:
    objects = render("webhook-disabled")
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]

    assert not {"MutatingWebhookConfiguration", "Secret"} & kinds(objects)
    assert not [a for a in container["args"] if a.startswith("--webhook")]
    assert [v["name"] for v in container["volumeMounts"]] == ["tmp"]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), ["routing.laneway.dev/policy: support-bot", "in every namespace"]),
        (
            ("webhook.enabled=false", "operator.watchNamespaces={team-a,team-b}"),
            ["The webhook is disabled", "in: team-a, team-b"],
        ),
    ],
)
def test_notes_tell_the_user_what_to_run_next(
    helm: Helm, sets: tuple[str, ...], expected: list[str]
) -> None:
    set_args = [arg for pair in sets for arg in ("--set", pair)]
    proc = helm("install", "laneway", str(CHART), "-n", NAMESPACE, "--dry-run=client", *set_args)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]

    assert f"kubectl -n {NAMESPACE} rollout status deployment/laneway" in notes
    assert "kubectl apply -f examples/" in notes
    assert "kubectl get lane,rpol -A" in notes
    for text in expected:
        assert text in notes


# -- names and limits --------------------------------------------------------------------------


def test_names_fit_in_63_characters_for_the_longest_release_name(
    render: Render,
) -> None:
    release = "a-release-name-that-is-exactly-fifty-three-chars-long"
    assert len(release) == 53  # Helm's own limit for release names

    for obj in render("everything-on", release=release):
        meta = obj["metadata"]
        if obj["kind"] != "CustomResourceDefinition":
            assert len(meta["name"]) <= 63, meta["name"]
        for value in meta.get("labels", {}).values():
            assert len(value) <= 63, value
    services = sorted(
        o["metadata"]["name"] for o in render(release=release) if o["kind"] == "Service"
    )
    assert [name.rsplit("-", 1)[1] for name in services] == ["metrics", "webhook"]
    assert all(name.startswith(release) and len(name) <= 63 for name in services), services


def test_pdb_min_available_at_or_above_replicas_fails_with_the_fix(
    helm: Helm,
) -> None:
    proc = helm(*template_args("defaults", "pdb.minAvailable=2"))

    assert proc.returncode != 0
    assert "pdb.minAvailable (2) must be lower than operator.replicas (2)" in proc.stderr
