"""Sidecar injection: the JSONPatch the webhook returns, applied to sample Pods."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from laneway_operator.injection import (
    SidecarOptions,
    build_patch,
    is_injected,
    secret_volume_name,
    secrets_of,
    selector_matches,
)
from laneway_operator.runtime import Tuning

OPTIONS = SidecarOptions(image="registry.example/laneway:1.2.3")
SECRETS = {"provider-a": ["apiKey"], "provider-b": ["key", "token"]}


def pod(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "labels": {"routing.laneway.dev/policy": "support-bot"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    body["spec"].update(spec)
    return body


def inject(body: dict[str, Any], secrets: dict[str, list[str]] = SECRETS) -> dict[str, Any]:
    patch = build_patch(body, namespace="team-a", policy="support-bot", secrets=secrets,
                        options=OPTIONS)
    return jsonpatch.apply_patch(copy.deepcopy(body), patch)


def sidecar(body: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in body["spec"]["initContainers"] if c["name"] == "laneway-router")


def test_injected_pod_runs_the_router_as_a_native_sidecar_following_its_configmap():
    out = inject(pod())

    router = sidecar(out)
    assert router["restartPolicy"] == "Always"
    assert router["image"] == "registry.example/laneway:1.2.3"
    assert router["args"][0] == "serve"
    args = dict(zip(router["args"][1::2], router["args"][2::2], strict=True))
    assert args == {
        "--config": "/etc/laneway/config/config.json",
        "--host": "0.0.0.0",
        "--port": "4000",
        "--secrets-dir": "/var/run/secrets/laneway",
        "--watch-configmap": "team-a/laneway-support-bot",
    }
    assert router["ports"] == [{"name": "laneway", "containerPort": 4000, "protocol": "TCP"}]
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 4000}
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 4000}
    assert router["securityContext"]["runAsNonRoot"] is True
    assert router["securityContext"]["readOnlyRootFilesystem"] is True
    assert out["metadata"]["annotations"] == {"routing.laneway.dev/injected": "true"}


def test_config_and_each_secret_are_mounted_with_only_the_referenced_keys():
    out = inject(pod())

    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["laneway-config"]["configMap"] == {"name": "laneway-support-bot"}
    b = volumes[secret_volume_name("provider-b")]["secret"]
    assert b == {"secretName": "provider-b",
                 "items": [{"key": "key", "path": "key"}, {"key": "token", "path": "token"}]}
    mounts = {m["mountPath"]: m["name"] for m in sidecar(out)["volumeMounts"]}
    assert mounts == {
        "/etc/laneway/config": "laneway-config",
        "/var/run/secrets/laneway/provider-a": secret_volume_name("provider-a"),
        "/var/run/secrets/laneway/provider-b": secret_volume_name("provider-b"),
    }
    assert not any("volumeMounts" in c for c in out["spec"]["containers"])


def test_app_containers_get_the_sidecar_base_url_unless_they_set_their_own():
    body = pod(containers=[
        {"name": "app", "image": "app:1"},
        {"name": "worker", "image": "app:1", "env": [{"name": "LOG", "value": "1"}]},
        {"name": "custom", "image": "app:1",
         "env": [{"name": "OPENAI_BASE_URL", "value": "http://elsewhere/v1"}]},
    ])

    out = inject(body)

    env = {c["name"]: c.get("env") for c in out["spec"]["containers"]}
    base = {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:4000/v1"}
    assert env["app"] == [base]
    assert env["worker"] == [{"name": "LOG", "value": "1"}, base]
    assert env["custom"] == [{"name": "OPENAI_BASE_URL", "value": "http://elsewhere/v1"}]


def test_existing_volumes_init_containers_and_annotations_are_kept():
    body = pod(
        volumes=[{"name": "data", "emptyDir": {}}],
        initContainers=[{"name": "migrate", "image": "app:1"}],
    )
    body["metadata"]["annotations"] = {"team": "a"}

    out = inject(body)

    assert out["spec"]["volumes"][0] == {"name": "data", "emptyDir": {}}
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["laneway-router", "migrate"]
    assert out["metadata"]["annotations"] == {"team": "a", "routing.laneway.dev/injected": "true"}


def test_a_second_pass_adds_nothing():
    once = inject(pod())

    assert is_injected(once)
    assert build_patch(once, namespace="team-a", policy="support-bot", secrets=SECRETS,
                       options=OPTIONS) == []


def test_a_pod_without_the_token_gets_one_for_the_sidecar_only():
    out = inject(pod(automountServiceAccountToken=False))

    mounts = {m["mountPath"]: m["name"] for m in sidecar(out)["volumeMounts"]}
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"] == "laneway-kube-api"
    projected = next(v for v in out["spec"]["volumes"] if v["name"] == "laneway-kube-api")
    sources = projected["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert "volumeMounts" not in out["spec"]["containers"][0]


def test_a_policy_without_secrets_mounts_only_the_config():
    out = inject(pod(), secrets={})

    assert [v["name"] for v in out["spec"]["volumes"]] == ["laneway-config"]


def test_secrets_of_lanes_groups_keys_by_secret_and_skips_lanes_without_a_key():
    lanes = [
        {"spec": {"provider": {"apiKeySecretRef": {"name": "s1", "key": "b"}}}},
        {"spec": {"provider": {"apiKeySecretRef": {"name": "s1", "key": "a"}}}},
        {"spec": {"provider": {"apiKeySecretRef": {"name": "s0", "key": "k"}}}},
        {"spec": {"provider": {"baseURL": "http://vllm:8000/v1"}}},
    ]

    assert secrets_of(lanes) == {"s0": ["k"], "s1": ["a", "b"]}


def test_secret_volume_names_are_valid_dns_labels_for_long_secret_names():
    name = secret_volume_name("x" * 253)

    assert len(name) <= 63
    assert name == secret_volume_name("x" * 253)
    assert name != secret_volume_name("y" * 253)


def test_label_selectors_match_as_kubernetes_defines_them():
    labels = {"app": "bot", "tier": "web"}

    assert selector_matches({"matchLabels": {"app": "bot"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "other"}}, labels)
    assert selector_matches({"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web", "api"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "app", "operator": "Exists"},
        {"key": "tier", "operator": "NotIn", "values": ["batch"]},
    ]}, labels)
    assert not selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, labels)
    assert selector_matches({}, labels)


def test_the_operators_egress_proxy_settings_reach_the_sidecar_and_nothing_else():
    tuning = Tuning.from_env({
        "LANEWAY_SIDECAR_IMAGE": "registry.example/laneway:1.2.3",
        "LANEWAY_EGRESS_HTTPS_PROXY": "http://proxy.corp:3128",
        "LANEWAY_EGRESS_NO_PROXY": ".svc,10.0.0.0/8",
        "HTTPS_PROXY": "http://other:3128",
    })
    body = pod()
    patch = build_patch(body, namespace="team-a", policy="support-bot", secrets=SECRETS,
                        options=tuning.sidecar)
    out = jsonpatch.apply_patch(copy.deepcopy(body), patch)

    env = {e["name"]: e["value"] for e in sidecar(out)["env"]}
    assert env["LANEWAY_EGRESS_HTTPS_PROXY"] == "http://proxy.corp:3128"
    assert env["LANEWAY_EGRESS_NO_PROXY"] == ".svc,10.0.0.0/8"
    assert "HTTPS_PROXY" not in env and "LANEWAY_EGRESS_HTTP_PROXY" not in env
    app_env = {e["name"] for e in out["spec"]["containers"][0]["env"]}
    assert not [name for name in app_env if "PROXY" in name]


def test_a_proxy_url_with_credentials_is_not_copied_into_pod_specs(caplog):
    tuning = Tuning.from_env({
        "LANEWAY_EGRESS_HTTPS_PROXY": "http://team:hunter2@proxy.corp:3128",
        "LANEWAY_EGRESS_HTTP_PROXY": "http://proxy.corp:3128",
    })

    assert tuning.sidecar.env == (("LANEWAY_EGRESS_HTTP_PROXY", "http://proxy.corp:3128"),)
    assert "LANEWAY_EGRESS_HTTPS_PROXY" in caplog.text and "credentials" in caplog.text
    assert "hunter2" not in caplog.text


def test_the_egress_proxy_secret_is_mounted_for_the_sidecar_alone():
    tuning = Tuning.from_env({"LANEWAY_EGRESS_PROXY_SECRET": "egress-proxy"})
    body = pod()
    patch = build_patch(body, namespace="team-a", policy="support-bot", secrets=SECRETS,
                        options=tuning.sidecar)
    out = jsonpatch.apply_patch(copy.deepcopy(body), patch)

    volume = next(v for v in out["spec"]["volumes"] if v["name"] == "laneway-egress-proxy")
    assert volume["secret"]["secretName"] == "egress-proxy"
    assert volume["secret"]["optional"] is True
    assert [item["key"] for item in volume["secret"]["items"]] == ["username", "password"]
    router = sidecar(out)
    mount = next(m for m in router["volumeMounts"] if m["name"] == "laneway-egress-proxy")
    assert mount == {"name": "laneway-egress-proxy",
                     "mountPath": "/var/run/secrets/laneway-egress-proxy", "readOnly": True}
    env = {e["name"]: e["value"] for e in router["env"]}
    assert env["LANEWAY_EGRESS_PROXY_CREDENTIALS"] == "/var/run/secrets/laneway-egress-proxy"
    assert "volumeMounts" not in out["spec"]["containers"][0]

    plain = build_patch(pod(), namespace="team-a", policy="support-bot", secrets=SECRETS,
                        options=OPTIONS)
    assert "laneway-egress-proxy" not in str(plain)
