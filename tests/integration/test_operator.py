"""The operator against a real API server: compile to ConfigMaps, probe lanes, report problems.

Each test runs `laneway operator --standalone -n <its namespace>` as a subprocess and simulated
providers on loopback ports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from laneway_operator.compiler import compile_policy, render_config
from router_sidecar.config import load_config_text
from router_sidecar.simulator import SimulatedProvider
from tests.controlplane.plane import ControlPlane
from tests.integration.operator_harness import (
    OperatorProcess,
    apply,
    condition,
    events,
    get,
    lane,
    operator_fleet,
    policy,
    secret,
    start_operator,
    wait_for,
)

pytestmark = pytest.mark.controlplane


@pytest.fixture
def operators(
    controlplane: ControlPlane, crds: list[str], namespace: str, request: pytest.FixtureRequest
) -> Iterator[list[OperatorProcess]]:
    yield from operator_fleet(controlplane, namespace, request)


def configmap_text(plane: ControlPlane, namespace: str, name: str) -> str | None:
    cm = get(plane, "configmap", f"laneway-{name}", namespace)
    return (cm or {}).get("data", {}).get("config.json")


def lane_phase(plane: ControlPlane, namespace: str, name: str) -> str | None:
    return ((get(plane, "modellane", name, namespace) or {}).get("status") or {}).get("phase")


def test_a_policy_compiles_into_a_configmap_it_owns_with_status_and_columns(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    with SimulatedProvider(model="primary") as a, SimulatedProvider(model="backup") as b:
        apply(controlplane, secret(namespace), lane(namespace, "primary", a.url),
              lane(namespace, "backup", b.url),
              policy(namespace, "bot", {"fast": ["primary", "backup"]}))
        operators.append(start_operator(controlplane, tmp_path, namespace))

        for name in ("primary", "backup"):
            wait_for(lambda n=name: lane_phase(controlplane, namespace, n) == "Healthy",
                     timeout=20, what=f"lane {name} Healthy")
        pol = wait_for(
            lambda: (p := get(controlplane, "routingpolicy", "bot", namespace))
            and condition(p, "Ready").get("status") == "True"
            and all(item["phase"] == "Healthy" for item in p["status"]["routes"][0]["lanes"])
            and p,
            timeout=20, what="policy Ready with both lanes Healthy",
        )

        # The ConfigMap holds exactly what the compiler makes of the objects in the cluster.
        text = configmap_text(controlplane, namespace, "bot")
        lanes = {name: get(controlplane, "modellane", name, namespace)
                 for name in ("primary", "backup")}
        assert text == render_config(compile_policy(pol, lanes))
        config = load_config_text(text)
        assert config.version == pol["status"]["configVersion"]
        assert config.lanes["primary"].provider.api_key.name == "provider"
        assert "sk-test-key" not in text

        cm = get(controlplane, "configmap", "laneway-bot", namespace)
        owner = cm["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "RoutingPolicy", "bot", pol["metadata"]["uid"])
        assert cm["metadata"]["annotations"]["routing.laneway.dev/config-version"] == (
            config.version)

        assert pol["status"]["routes"] == [{"name": "fast", "activeLane": "primary", "lanes": [
            {"name": "primary", "phase": "Healthy"}, {"name": "backup", "phase": "Healthy"}]}]
        assert pol["status"]["observedGeneration"] == pol["metadata"]["generation"]
        assert condition(pol, "Compiled")["reason"] == "ConfigWritten"
        assert condition(pol, "Degraded")["status"] == "False"

        table = controlplane.kubectl("get", "lane,rpol", "-n", namespace, "-o", "wide").stdout
        assert "Healthy" in table and "fast=primary" in table
        lane_obj = get(controlplane, "modellane", "primary", namespace)
        assert lane_obj["status"]["lastProbe"]["result"] == "Succeeded"
        assert isinstance(lane_obj["status"]["lastProbe"]["latencyMs"], int)
        assert condition(lane_obj, "Ready")["reason"] == "ProbeSucceeded"

        role = get(controlplane, "role", "laneway-config-bot", namespace)
        assert role["rules"][0]["resourceNames"] == ["laneway-bot"]

        metrics = operators[0].metrics()
        assert 'laneway_operator_lane_phase{lane="primary",namespace="' in metrics
        assert "laneway_operator_probe_duration_seconds_count" in metrics
        assert 'laneway_operator_reconciles_total{kind="RoutingPolicy",result="ok"}' in metrics


def test_a_lane_that_goes_down_moves_its_routes_and_comes_back_after_the_hold_down(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    with SimulatedProvider(model="primary") as a, SimulatedProvider(model="backup") as b:
        apply(controlplane, secret(namespace), lane(namespace, "primary", a.url),
              lane(namespace, "backup", b.url),
              policy(namespace, "bot", {"fast": ["primary", "backup"]}))
        operators.append(start_operator(controlplane, tmp_path, namespace))
        wait_for(lambda: active_lane(controlplane, namespace) == "primary"
                 and lane_phase(controlplane, namespace, "backup") == "Healthy",
                 timeout=20, what="route fast on primary")

        a.set_mode("down")
        started = time.monotonic()
        wait_for(lambda: active_lane(controlplane, namespace) == "backup", timeout=15,
                 what="route fast moved to backup")
        print(f"\nroute moved to the backup {time.monotonic() - started:.1f}s after the "
              "primary went down (failureThreshold 2, interval 1s)")
        assert lane_phase(controlplane, namespace, "primary") == "Down"
        config = load_config_text(configmap_text(controlplane, namespace, "bot"))
        assert config.lanes["primary"].phase == "Down"
        pol = get(controlplane, "routingpolicy", "bot", namespace)
        degraded = condition(pol, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "BackupActive")
        reasons = {e["reason"] for e in events(controlplane, namespace, "bot")}
        assert "RouteShifted" in reasons
        assert "LaneDown" in {e["reason"] for e in events(controlplane, namespace, "primary")}

        a.set_mode("ok")
        healed = time.monotonic()
        wait_for(lambda: active_lane(controlplane, namespace) == "primary", timeout=15,
                 what="route fast back on primary")
        back = time.monotonic() - healed
        print(f"route back on the primary {back:.1f}s after it recovered (hold-down 2s)")
        assert back >= 2.0  # not before the hold-down
        assert "RouteRestored" in {e["reason"] for e in events(controlplane, namespace, "bot")}
        assert "LaneRestored" in {e["reason"] for e in events(controlplane, namespace, "primary")}


def active_lane(plane: ControlPlane, namespace: str) -> str | None:
    pol = get(plane, "routingpolicy", "bot", namespace) or {}
    routes = (pol.get("status") or {}).get("routes") or []
    return routes[0].get("activeLane") if routes else None


def test_broken_references_and_semantic_errors_are_reported_not_crashed_on(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    with SimulatedProvider(model="fast") as sim:
        operators.append(start_operator(controlplane, tmp_path, namespace))
        apply(controlplane, secret(namespace), lane(namespace, "fast", sim.url),
              policy(namespace, "bot", {"fast": ["fast", "ghost"]}))

        pol = wait_for(lambda: (p := get(controlplane, "routingpolicy", "bot", namespace))
                       and condition(p, "Compiled").get("status") == "False" and p,
                       timeout=20, what="Compiled=False")
        compiled = condition(pol, "Compiled")
        assert compiled["reason"] == "LaneNotFound"
        assert "'ghost' does not exist" in compiled["message"]
        assert compiled["observedGeneration"] == pol["metadata"]["generation"]
        ready = condition(pol, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "CompileFailed")
        assert "wait for ConfigMap laneway-bot" in ready["message"]
        assert get(controlplane, "configmap", "laneway-bot", namespace) is None
        warning = wait_for(lambda: [e for e in events(controlplane, namespace, "bot")
                                    if e["reason"] == "CompileFailed"],
                           timeout=10, what="a CompileFailed event")
        assert warning[0]["type"] == "Warning" and "ghost" in warning[0]["message"]

        # Creating the missing lane fixes the policy without touching it.
        apply(controlplane, lane(namespace, "ghost", sim.url))
        wait_for(lambda: condition(get(controlplane, "routingpolicy", "bot", namespace),
                                   "Compiled").get("status") == "True",
                 timeout=20, what="Compiled=True once the lane exists")
        version = get(controlplane, "routingpolicy", "bot", namespace)["status"]["configVersion"]

        # A semantic error: an escalation cycle. The last good config stays in place.
        broken = policy(namespace, "bot", {"fast": ["fast"], "strong": ["ghost"]},
                        escalation={"path": [{"from": "fast", "to": "strong"},
                                             {"from": "strong", "to": "fast"}]})
        apply(controlplane, broken)
        pol = wait_for(lambda: (p := get(controlplane, "routingpolicy", "bot", namespace))
                       and condition(p, "Compiled").get("reason") == "EscalationCycle" and p,
                       timeout=20, what="Compiled=False EscalationCycle")
        assert "fast -> strong -> fast" in condition(pol, "Compiled")["message"]
        assert pol["status"]["configVersion"] == version
        assert version in condition(pol, "Ready")["message"]
        assert load_config_text(configmap_text(controlplane, namespace, "bot")).version == version

        # No hot loop: the operator does not keep rewriting a policy that cannot compile.
        rv = pol["metadata"]["resourceVersion"]
        time.sleep(3)
        assert get(controlplane, "routingpolicy", "bot", namespace)["metadata"][
            "resourceVersion"] == rv
        failures = [e for e in events(controlplane, namespace, "bot")
                    if e["reason"] == "CompileFailed"]
        assert sum(e.get("count", 1) for e in failures) == 2  # once per distinct error


def test_objects_laneway_did_not_make_are_never_overwritten(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    theirs = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "laneway-bot", "namespace": namespace},
              "data": {"config.json": "their own settings"}}
    with SimulatedProvider(model="a") as a:
        apply(controlplane, theirs, secret(namespace), lane(namespace, "a", a.url),
              policy(namespace, "bot", {"fast": ["a"]}))
        operators.append(start_operator(controlplane, tmp_path, namespace))

        pol = wait_for(lambda: (p := get(controlplane, "routingpolicy", "bot", namespace))
                       and condition(p, "Compiled").get("reason") == "NameTaken" and p,
                       timeout=20, what="Compiled=False NameTaken")
        message = condition(pol, "Compiled")["message"]
        assert f"ConfigMap {namespace}/laneway-bot exists and was not made by Laneway" in message
        assert "delete or rename it" in message
        ready = condition(pol, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "NameTaken")
        warning = wait_for(lambda: [e for e in events(controlplane, namespace, "bot")
                                    if e["reason"] == "NameTaken"],
                           timeout=10, what="a NameTaken event")
        assert warning[0]["type"] == "Warning"
        cm = get(controlplane, "configmap", "laneway-bot", namespace)
        assert cm["data"] == {"config.json": "their own settings"}
        assert "ownerReferences" not in cm["metadata"] and "labels" not in cm["metadata"]
        assert 'result="name_taken"' in operators[0].metrics()

        # Once the name is free, the next change to the policy writes Laneway's own objects.
        controlplane.kubectl("delete", "configmap", "laneway-bot", "-n", namespace)
        controlplane.kubectl("annotate", "routingpolicy", "bot", "-n", namespace, "retry=1")
        wait_for(lambda: condition(get(controlplane, "routingpolicy", "bot", namespace),
                                   "Compiled").get("reason") == "ConfigWritten",
                 timeout=20, what="Compiled=True once the name is free")
        cm = get(controlplane, "configmap", "laneway-bot", namespace)
        assert cm["metadata"]["ownerReferences"][0]["name"] == "bot"

        # A Role of that name that another controller owns is not taken over either.
        controlplane.kubectl("delete", "role", "laneway-config-bot", "-n", namespace)
        apply(controlplane, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "laneway-config-bot", "namespace": namespace,
                         "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                              "name": "laneway-bot",
                                              "uid": cm["metadata"]["uid"],
                                              "controller": True}]},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        })
        controlplane.kubectl("annotate", "routingpolicy", "bot", "-n", namespace, "retry=2",
                           "--overwrite")
        pol = wait_for(lambda: (p := get(controlplane, "routingpolicy", "bot", namespace))
                       and condition(p, "Compiled").get("reason") == "NameTaken" and p,
                       timeout=20, what="NameTaken for the Role")
        assert "controlled by ConfigMap laneway-bot" in condition(pol, "Compiled")["message"]
        role = get(controlplane, "role", "laneway-config-bot", namespace)
        assert role["rules"][0]["resources"] == ["pods"]


def test_deleting_a_lane_marks_the_policies_that_use_it(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    with SimulatedProvider(model="a") as a, SimulatedProvider(model="b") as b:
        apply(controlplane, secret(namespace), lane(namespace, "a", a.url),
              lane(namespace, "b", b.url),
              policy(namespace, "one", {"fast": ["a", "b"]}),
              policy(namespace, "two", {"fast": ["b"]}))
        operators.append(start_operator(controlplane, tmp_path, namespace))
        for name in ("one", "two"):
            wait_for(lambda n=name: condition(get(controlplane, "routingpolicy", n, namespace),
                                              "Compiled").get("status") == "True",
                     timeout=20, what=f"policy {name} compiled")

        controlplane.kubectl("delete", "modellane", "a", "-n", namespace, "--timeout=20s")

        one = wait_for(lambda: (p := get(controlplane, "routingpolicy", "one", namespace))
                       and condition(p, "Compiled").get("status") == "False" and p,
                       timeout=20, what="policy one marked")
        assert condition(one, "Compiled")["reason"] == "LaneNotFound"
        assert condition(get(controlplane, "routingpolicy", "two", namespace),
                         "Compiled")["status"] == "True"


def test_deleting_a_policy_deletes_its_configmap_and_access_through_owner_references(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    with SimulatedProvider(model="a") as a:
        apply(controlplane, secret(namespace), lane(namespace, "a", a.url),
              policy(namespace, "bot", {"fast": ["a"]}))
        operators.append(start_operator(controlplane, tmp_path, namespace))
        wait_for(lambda: get(controlplane, "rolebinding", "laneway-config-bot", namespace),
                 timeout=20, what="the policy's objects")

        controlplane.kubectl("delete", "routingpolicy", "bot", "-n", namespace, "--timeout=20s")

        for kind, name in [("configmap", "laneway-bot"), ("role", "laneway-config-bot"),
                           ("rolebinding", "laneway-config-bot")]:
            wait_for(lambda k=kind, n=name: get(controlplane, k, n, namespace) is None,
                     timeout=30, what=f"{kind} {name} garbage-collected")


def test_restarting_the_operator_changes_nothing_that_was_right(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    with SimulatedProvider(model="a") as a:
        apply(controlplane, secret(namespace), lane(namespace, "a", a.url),
              policy(namespace, "bot", {"fast": ["a"]}))
        first = start_operator(controlplane, tmp_path, namespace, name="first")
        operators.append(first)
        wait_for(lambda: lane_phase(controlplane, namespace, "a") == "Healthy"
                 and condition(get(controlplane, "routingpolicy", "bot", namespace),
                               "Ready").get("status") == "True", timeout=20, what="ready")
        time.sleep(1.5)  # let the last writes of the first start settle
        before = versions(controlplane, namespace)

        assert first.stop() == 0
        second = start_operator(controlplane, tmp_path, namespace, name="second")
        operators.append(second)
        probed = get(controlplane, "modellane", "a", namespace)["status"]["lastProbe"]["time"]
        wait_for(lambda: get(controlplane, "modellane", "a", namespace)["status"]["lastProbe"][
            "time"] != probed, timeout=15, what="a probe by the restarted operator")
        time.sleep(1.5)

        assert versions(controlplane, namespace) == before
        assert "written to ConfigMap" not in second.log()


def test_a_restarted_operator_counts_on_from_the_probe_runs_in_the_lane_status(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    probe = {"interval": "1s", "timeout": "500ms", "failureThreshold": 50, "successThreshold": 1}
    with SimulatedProvider(model="a") as a:
        apply(controlplane, secret(namespace), lane(namespace, "a", a.url, probe=probe),
              policy(namespace, "bot", {"fast": ["a"]}))
        first = start_operator(controlplane, tmp_path, namespace, name="first")
        operators.append(first)
        wait_for(lambda: lane_phase(controlplane, namespace, "a") == "Healthy", timeout=20,
                 what="lane a Healthy")
        a.set_mode("down")
        wait_for(lambda: lane_status(controlplane, namespace, "a").get("consecutiveFailures", 0)
                 >= 2, timeout=15, what="two failed probes counted in the status")
        assert first.stop() == 0
        before = lane_status(controlplane, namespace, "a")
        assert (before["phase"], before["consecutiveSuccesses"]) == ("Degraded", 0)

        operators.append(start_operator(controlplane, tmp_path, namespace, name="second"))
        after = wait_for(lambda: (s := lane_status(controlplane, namespace, "a"))
                         ["lastProbe"]["time"] != before["lastProbe"]["time"] and s,
                         timeout=15, what="a probe by the restarted operator")
        # The run goes on where it stood, so failureThreshold counts across restarts.
        assert after["consecutiveFailures"] > before["consecutiveFailures"]
        assert after["phase"] == "Degraded"


def lane_status(plane: ControlPlane, namespace: str, name: str) -> dict:
    return (get(plane, "modellane", name, namespace) or {}).get("status") or {}


def versions(plane: ControlPlane, namespace: str) -> dict[str, str]:
    """resourceVersion of everything the operator writes for policy `bot`."""
    out = {}
    for kind, name in [("configmap", "laneway-bot"), ("role", "laneway-config-bot"),
                       ("rolebinding", "laneway-config-bot"), ("routingpolicy", "bot")]:
        out[kind] = get(plane, kind, name, namespace)["metadata"]["resourceVersion"]
    return out


REPO = Path(__file__).resolve().parents[2]
PEERING_CRDS = REPO / "helm/laneway/crds/kopf-peerings.yaml"


def test_two_replicas_with_peering_do_not_fight(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    controlplane.kubectl("apply", "-f", str(PEERING_CRDS))
    for crd in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        controlplane.kubectl("wait", "--for=condition=Established", f"crd/{crd}",
                             "--timeout=30s")
    with SimulatedProvider(model="a") as a, SimulatedProvider(model="b") as b:
        apply(controlplane, secret(namespace), lane(namespace, "a", a.url),
              lane(namespace, "b", b.url), policy(namespace, "bot", {"fast": ["a", "b"]}))
        env = {"LANEWAY_PEERING_NAME": "laneway-test"}
        standby = start_operator(controlplane, tmp_path, namespace, name="standby",
                                 env={**env, "LANEWAY_PEERING_PRIORITY": "100"},
                                 standalone=False)
        operators.append(standby)
        active = start_operator(controlplane, tmp_path, namespace, name="active",
                                env={**env, "LANEWAY_PEERING_PRIORITY": "200"},
                                standalone=False)
        operators.append(active)

        wait_for(lambda: condition(get(controlplane, "routingpolicy", "bot", namespace),
                                   "Ready").get("status") == "True", timeout=20, what="ready")
        peers = get(controlplane, "kopfpeerings.kopf.dev", "laneway-test", namespace)["status"]
        assert sorted(peer["priority"] for peer in peers.values()) == [100, 200]
        time.sleep(2)
        before = get(controlplane, "configmap", "laneway-bot", namespace)["metadata"][
            "resourceVersion"]
        time.sleep(4)
        assert get(controlplane, "configmap", "laneway-bot", namespace)["metadata"][
            "resourceVersion"] == before
        # Only the higher priority replica probes; the other waits.
        counts = probe_count(active), probe_count(standby)
        time.sleep(3)
        assert probe_count(active) > counts[0]
        assert probe_count(standby) == counts[1]

        # The active replica leaves gracefully; the other takes over and reconciles changes.
        assert active.stop() == 0
        apply(controlplane, policy(namespace, "bot", {"fast": ["b", "a"]}))
        wait_for(lambda: (get(controlplane, "routingpolicy", "bot", namespace)["status"]
                          .get("routes") or [{}])[0].get("activeLane") == "b",
                 timeout=30, what="the standby replica to take over")
        counts = probe_count(standby)
        time.sleep(2)
        assert probe_count(standby) > counts


def probe_count(op: OperatorProcess) -> float:
    """All probes an operator process has sent, from its /metrics."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in op.metrics().splitlines()
               if line.startswith("laneway_operator_probes_total{"))


def test_the_operator_works_with_only_the_rbac_the_helm_chart_grants(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    release = f"rbac-{namespace[-6:]}"
    rendered = controlplane.helm("template", release, str(REPO / "helm/laneway"),
                                 "--namespace", namespace,
                                 "--set", f"operator.watchNamespaces={{{namespace}}}").stdout
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in wanted]
    account = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    apply(controlplane, *docs)
    try:
        token = controlplane.kubectl("create", "token", account, "-n", namespace).stdout.strip()
        kubeconfig = tmp_path / "operator.kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "op",
            "clusters": [{"name": "c", "cluster": {"server": controlplane.api_url,
                                                   "certificate-authority": str(
                                                       controlplane.ca_file)}}],
            "users": [{"name": "op", "user": {"token": token}}],
            "contexts": [{"name": "op", "context": {"cluster": "c", "user": "op"}}],
        }))
        # The provider insists on the key, so a Healthy lane proves the Secret was read.
        with SimulatedProvider(model="a", api_key="sk-test-key") as a:
            apply(controlplane, secret(namespace), lane(namespace, "a", a.url),
                  policy(namespace, "bot", {"fast": ["a"]}))
            operators.append(start_operator(controlplane, tmp_path, namespace,
                                            env={"KUBECONFIG": str(kubeconfig)}))
            wait_for(lambda: lane_phase(controlplane, namespace, "a") == "Healthy",
                     timeout=20, what="lane a Healthy")
            wait_for(lambda: get(controlplane, "rolebinding", "laneway-config-bot", namespace)
                     and condition(get(controlplane, "routingpolicy", "bot", namespace),
                                   "Ready").get("status") == "True",
                     timeout=20, what="the policy's ConfigMap, access and status")
            assert "ConfigUpdated" in {e["reason"] for e in events(controlplane, namespace, "bot")}
            assert "Forbidden" not in operators[0].log()
    finally:
        for doc in docs:
            if doc["kind"].startswith("Cluster"):
                controlplane.kubectl("delete", doc["kind"], doc["metadata"]["name"], check=False)


def test_a_slow_provider_does_not_delay_the_probes_of_other_lanes(
    controlplane: ControlPlane, namespace: str, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    # Every probe of the slow lane hangs for its whole 4 s timeout.
    slow_probe = {"interval": "5s", "timeout": "4s", "failureThreshold": 1, "successThreshold": 1}
    with SimulatedProvider(model="slow", latency_ms=10_000) as slow, \
            SimulatedProvider(model="quick") as quick:
        apply(controlplane, secret(namespace),
              lane(namespace, "slow", slow.url, probe=slow_probe),
              lane(namespace, "quick", quick.url),
              policy(namespace, "bot", {"fast": ["quick", "slow"]}))
        operators.append(start_operator(controlplane, tmp_path, namespace))
        wait_for(lambda: lane_phase(controlplane, namespace, "quick") == "Healthy",
                 timeout=20, what="lane quick Healthy")

        # Meanwhile the quick lane keeps its own 1 s interval: serialised behind the slow
        # lane's probes it would get at most one probe in this window.
        before = quick.state["models_requests"]
        time.sleep(3.5)
        assert quick.state["models_requests"] - before >= 2

        wait_for(lambda: lane_phase(controlplane, namespace, "slow") == "Down",
                 timeout=20, what="lane slow Down after its probe timed out")
        slow_lane = get(controlplane, "modellane", "slow", namespace)
        assert slow_lane["status"]["lastProbe"]["result"] == "Timeout"
