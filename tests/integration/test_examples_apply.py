"""Every manifest in `examples/` is accepted by a real API server, as a new user applies it.

Each file is applied on its own, in order (the README's steps), into the test's namespace instead
of `team-a`; the Namespace object itself is left out because the test namespace replaces it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.controlplane.plane import ControlPlane

pytestmark = pytest.mark.controlplane

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))


def moved(text: str, namespace: str) -> str:
    """The manifests of one example file, in `namespace`, without Namespace objects."""
    objects = []
    for obj in yaml.safe_load_all(text):
        if not obj or obj["kind"] == "Namespace":
            continue
        obj["metadata"]["namespace"] = namespace
        objects.append(obj)
    return yaml.safe_dump_all(objects)


def test_examples_are_numbered_so_they_apply_in_order() -> None:
    assert [path.name[:3] for path in FILES] == ["00-", "10-", "20-", "30-", "40-"]
    assert (EXAMPLES / "README.md").is_file()


def test_every_example_is_accepted_in_order(
    controlplane: ControlPlane, crds: list[str], namespace: str
) -> None:
    applied = []
    for path in FILES:
        proc = controlplane.kubectl(
            "apply", "-f", "-", input=moved(path.read_text(), namespace), check=False
        )
        assert proc.returncode == 0, f"{path.name} was rejected:\n{proc.stderr}"
        applied.extend(line.split()[0] for line in proc.stdout.splitlines())

    kinds = {name.split("/")[0] for name in applied}
    assert kinds == {
        "secret",
        "modellane.routing.laneway.dev",
        "routingpolicy.routing.laneway.dev",
    }
    items = json.loads(
        controlplane.kubectl("get", "lane,rpol", "-n", namespace, "-o", "json").stdout
    )["items"]
    names = sorted((item["kind"], item["metadata"]["name"]) for item in items)
    assert ("ModelLane", "premium-agent") in names
    assert ("RoutingPolicy", "support-bot") in names
    assert ("RoutingPolicy", "docs-assistant") in names
    assert ("RoutingPolicy", "ops-agent") in names
    assert len(names) == 9


def test_a_server_side_dry_run_of_the_examples_folder_as_written_succeeds(
    controlplane: ControlPlane, crds: list[str]
) -> None:
    # `kubectl apply -f examples/` exactly as the README says. A dry run cannot create the
    # namespace the other objects need, so step 0 is applied for real first.
    controlplane.kubectl("apply", "-f", str(EXAMPLES / "00-namespace-and-secrets.yaml"))
    proc = controlplane.kubectl("apply", "--dry-run=server", "-f", str(EXAMPLES), check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 12  # namespace, 2 secrets, 6 lanes, 3 policies
    assert all(line.endswith("(server dry run)") for line in lines)
    assert any(line.startswith("routingpolicy.routing.laneway.dev/support-bot ") for line in lines)
