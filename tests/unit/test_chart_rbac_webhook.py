"""The Helm chart's admission webhook and RBAC, rendered offline with the real `helm` binary.

The webhook's selectors, service and certificates (generated, or issued by cert-manager), the
least-privilege rules cluster-wide and per watched namespace, and the kopf peering objects.
Fixtures and helpers come from `chart_helpers.py`.
"""

from __future__ import annotations

import base64

import pytest
from cryptography import x509

from tests.unit.chart_helpers import (
    CLUSTER_WIDE_RULES,
    NAMESPACE,
    NAMESPACED_MODE_CLUSTER_RULES,
    NAMESPACED_RULES,
    SCENARIOS,
    Render,
    kinds,
    only,
    rule_table,
)

# `helm` and `render` are fixtures (`render` needs `helm`): importing each under its own name
# registers it here.
from tests.unit.chart_helpers import helm as helm
from tests.unit.chart_helpers import render as render

# -- webhook -----------------------------------------------------------------------------------


def test_webhook_only_sees_labelled_pods_outside_system_namespaces(
    render: Render,
) -> None:
    objects = render()
    (hook,) = only(objects, "MutatingWebhookConfiguration")["webhooks"]
    service = only(objects, "Service", "laneway-webhook")

    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": "routing.laneway.dev/policy", "operator": "Exists"}]
    }
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", NAMESPACE],
        }
    ]
    assert hook["clientConfig"]["service"] == {
        "name": "laneway-webhook", "namespace": NAMESPACE, "path": "/mutate-pods", "port": 443
    }  # fmt: skip
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["rules"][0]["resources"] == ["pods"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "Never"
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]


def test_extra_namespace_selection_is_added_to_the_built_in_exclusions(
    render: Render,
) -> None:
    (hook,) = only(render("everything-on"), "MutatingWebhookConfiguration")["webhooks"]
    selector = hook["namespaceSelector"]

    assert selector["matchLabels"] == {"laneway.dev/inject": "enabled"}
    assert [e["key"] for e in selector["matchExpressions"]] == [
        "kubernetes.io/metadata.name",
        "example.com/sandbox",
    ]
    assert hook["failurePolicy"] == "Ignore"


def test_generated_certificate_is_signed_by_the_ca_bundle_for_the_service_names(
    render: Render,
) -> None:
    objects = render()
    secret = only(objects, "Secret")
    (hook,) = only(objects, "MutatingWebhookConfiguration")["webhooks"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(
        hook["clientConfig"]["caBundle"]
    )
    cert.verify_directly_issued_by(ca)
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "laneway-webhook.laneway-system.svc",
        "laneway-webhook.laneway-system.svc.cluster.local",
    }


@pytest.mark.parametrize(
    ("scenario", "issuer"),
    [
        ("cert-manager", {"name": "laneway-selfsigned", "kind": "Issuer"}),
        ("cert-manager-cluster-issuer", {"name": "platform-ca", "kind": "ClusterIssuer"}),
    ],
)
def test_cert_manager_issues_the_certificate_and_injects_the_ca(
    render: Render, scenario: str, issuer: dict[str, str]
) -> None:
    objects = render(scenario)
    certificate = only(objects, "Certificate")
    webhook_config = only(objects, "MutatingWebhookConfiguration")

    assert "Secret" not in kinds(objects)
    assert ("Issuer" in kinds(objects)) == (issuer["kind"] == "Issuer")
    assert certificate["spec"]["issuerRef"] == {**issuer, "group": "cert-manager.io"}
    assert certificate["spec"]["secretName"] == "laneway-webhook-tls"
    assert "laneway-webhook.laneway-system.svc" in certificate["spec"]["dnsNames"]
    assert webhook_config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "laneway-system/laneway-webhook"
    }
    assert "caBundle" not in webhook_config["webhooks"][0]["clientConfig"]


# -- RBAC and peering --------------------------------------------------------------------------


def test_cluster_wide_rbac_grants_exactly_the_documented_rules(
    render: Render,
) -> None:
    objects = render()
    binding = only(objects, "ClusterRoleBinding")

    assert rule_table(only(objects, "ClusterRole")["rules"]) == CLUSTER_WIDE_RULES
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "laneway", "namespace": NAMESPACE}
    ]
    assert not {"Role", "RoleBinding"} & kinds(objects)


def test_watch_namespaces_moves_namespaced_rules_into_one_role_per_namespace(
    render: Render,
) -> None:
    objects = render("watch-namespaces")
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    peerings = [o for o in objects if o["kind"] == "KopfPeering"]
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]

    assert rule_table(only(objects, "ClusterRole")["rules"]) == NAMESPACED_MODE_CLUSTER_RULES
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert rule_table(role["rules"]) == NAMESPACED_RULES
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert "ClusterKopfPeering" not in kinds(objects)
    assert container["args"][5:9] == ["--namespace", "team-a", "--namespace", "team-b"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_rule_grants_wildcards_escalation_secret_writes_or_workloads(
    render: Render, scenario: str
) -> None:
    for obj in render(scenario):
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        table = rule_table(obj["rules"])
        assert not any("*" in verbs for verbs in table.values())
        assert not any({"escalate", "bind", "impersonate"} & verbs for verbs in table.values())
        assert table.get(("", "secrets"), set()) <= {"get", "list", "watch"}
        assert not [key for key in table if key[0] in ("apps", "batch", "*")]


def test_defaults_create_the_cluster_peering_object_the_operator_is_told_about(
    render: Render,
) -> None:
    objects = render()
    peering = only(objects, "ClusterKopfPeering")

    assert peering["metadata"]["name"] == "laneway"
    crds = {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
