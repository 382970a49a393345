"""Reading manifest files for the offline commands: what is read, what is skipped, what fails.

Every failure is a BadInput (exit code 2) whose message names the file and says what to change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from laneway.errors import BadInput
from laneway_operator.manifests import compile_files, load_manifests, select_policy

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

LANE = """
apiVersion: routing.laneway.dev/v1alpha1
kind: ModelLane
metadata: {{name: {name}{namespace}}}
spec:
  provider: {{type: openai, baseURL: "http://127.0.0.1:8000/v1", model: m}}
  pricing: {{inputPerMillion: 1, outputPerMillion: 2}}
  limits: {{contextWindow: 1000, maxOutputTokens: 100}}
"""
POLICY = """
apiVersion: routing.laneway.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: {name}{namespace}}}
spec:
  selector: {{}}
  routes: [{{name: only, lanes: [{lane}]}}]
  defaultRoute: only
"""


def lane(name: str = "l1", namespace: str | None = None) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return LANE.format(name=name, namespace=ns)


def policy(name: str = "p", namespace: str | None = None, lane: str = "l1") -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return POLICY.format(name=name, namespace=ns, lane=lane)


def write(tmp_path: Path, name: str, *docs: str) -> Path:
    path = tmp_path / name
    path.write_text("---\n".join(docs))
    return path


def test_a_folder_is_read_in_name_order_and_other_kinds_are_skipped() -> None:
    objs = load_manifests([str(EXAMPLES)])
    kinds = [obj["kind"] for obj in objs]
    assert kinds == ["ModelLane"] * 6 + ["RoutingPolicy"] * 3
    assert [obj["metadata"]["name"] for obj in objs][-3:] == [
        "support-bot", "docs-assistant", "ops-agent"]
    assert objs[0].source.endswith("10-lanes.yaml")  # type: ignore[attr-defined]


def test_files_and_folders_can_be_mixed_and_json_is_read_too(tmp_path: Path) -> None:
    write(tmp_path, "a.json", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}')
    write(tmp_path, "b.yml", lane("l1"))
    write(tmp_path, "notes.txt", "not a manifest")
    extra = write(tmp_path.parent, f"{tmp_path.name}-policy.yaml", policy())
    objs = load_manifests([str(tmp_path), str(extra)])
    assert [obj["kind"] for obj in objs] == ["ModelLane", "RoutingPolicy"]


def test_empty_documents_and_kind_list_wrappers_are_understood(tmp_path: Path) -> None:
    wrapped = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: routing.laneway.dev/v1alpha1, kind: ModelLane, metadata: {name: x}}\n"
    )
    path = write(tmp_path, "list.yaml", "", wrapped, "\n")
    assert [obj["metadata"]["name"] for obj in load_manifests([str(path)])] == ["x"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: [unclosed", "not valid YAML or JSON"),
        ("- just\n- a list\n", "document 1: must be a Kubernetes object"),
        ("kind: ModelLane\nmetadata: {name: x}\n", "document 1: apiVersion is missing"),
        ("apiVersion: v1\nkind: List\nitems: 3\n", "items must be a list"),
        (
            "apiVersion: routing.laneway.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: x}\n",
            "kind 'ModelRoute' is not a routing.laneway.dev kind; use ModelLane or RoutingPolicy",
        ),
        (
            "apiVersion: routing.laneway.dev/v1\nkind: ModelLane\nmetadata: {name: x}\n",
            "apiVersion must be routing.laneway.dev/v1alpha1",
        ),
        (
            "apiVersion: routing.laneway.dev/v1alpha1\nkind: ModelLane\nmetadata: {}\n",
            "a ModelLane needs metadata.name",
        ),
    ],
)
def test_broken_files_are_reported_with_the_file_name(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, "broken.yaml", text)
    with pytest.raises(BadInput) as info:
        load_manifests([str(path)])
    assert str(info.value).startswith(str(path))
    assert fragment in str(info.value)


def test_missing_and_unreadable_paths_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file or folder"):
        load_manifests([str(tmp_path / "nope.yaml")])
    with pytest.raises(BadInput, match=r"no manifests \(\*\.yaml, \*\.yml, \*\.json\)"):
        load_manifests([str(tmp_path)])
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInput, match="cannot read the file"):
        load_manifests([str(binary)])


def test_select_policy_returns_the_policy_and_the_lanes_of_its_namespace(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        policy(namespace="a"),
        lane("l1", "a"),
        lane("l2", "b"),
        lane("l3"),
    )
    found, lanes = select_policy(load_manifests([str(path)]), "p", None)
    assert found["metadata"] == {"name": "p", "namespace": "a"}
    # A lane without a namespace joins the policy's, as it would with `kubectl apply -n a`.
    assert sorted(lanes) == ["l1", "l3"]
    assert lanes["l3"]["metadata"]["namespace"] == "a"


def test_objects_without_a_namespace_take_the_one_given_with_n(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", policy(), lane("l1"))
    found, lanes = select_policy(load_manifests([str(path)]), "p", "team-b")
    assert found["metadata"]["namespace"] == "team-b"
    assert list(lanes) == ["l1"]
    found, _ = select_policy(load_manifests([str(path)]), "p", None)
    assert found["metadata"]["namespace"] == "default"


def test_a_missing_policy_lists_the_policies_that_exist() -> None:
    with pytest.raises(BadInput) as info:
        select_policy(load_manifests([str(EXAMPLES)]), "support-bto", None)
    assert str(info.value) == (
        "no RoutingPolicy named 'support-bto' in the given files; "
        "found: team-a/support-bot, team-a/docs-assistant, team-a/ops-agent"
    )
    with pytest.raises(BadInput, match="in namespace team-b"):
        select_policy(load_manifests([str(EXAMPLES)]), "support-bot", "team-b")


def test_a_policy_name_in_two_namespaces_needs_n(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", policy(namespace="a"), policy(namespace="b"))
    with pytest.raises(BadInput, match="exists in namespaces a, b; choose one with -n"):
        select_policy(load_manifests([str(path)]), "p", None)
    found, _ = select_policy(load_manifests([str(path)]), "p", "b")
    assert found["metadata"]["namespace"] == "b"


def test_the_same_object_twice_is_reported_with_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", policy(), lane("l1"))
    second = write(tmp_path, "b.yaml", lane("l1"))
    with pytest.raises(
        BadInput, match=r"ModelLane default/l1 is defined twice \(also in .*a\.yaml"
    ):
        select_policy(load_manifests([str(first), str(second)]), "p", None)
    again = write(tmp_path, "c.yaml", policy())
    with pytest.raises(BadInput, match="is defined more than once"):
        select_policy(load_manifests([str(first), str(again)]), "p", None)


def test_compile_errors_become_bad_input_naming_the_file_of_the_culprit(tmp_path: Path) -> None:
    lanes = write(
        tmp_path, "lanes.yaml", lane("l1").replace("contextWindow: 1000", "contextWindow: 10")
    )
    pol = write(tmp_path, "policy.yaml", policy())
    with pytest.raises(BadInput) as info:
        compile_files([str(lanes), str(pol)], "p", None)
    assert str(info.value).startswith(
        f"{lanes}: ModelLane default/l1: spec.limits.contextWindow: must be at least"
    )
    pol = write(tmp_path, "policy.yaml", policy(lane="l9"))
    with pytest.raises(BadInput) as info:
        compile_files([str(tmp_path)], "p", None)
    assert str(info.value).startswith(f"{pol}: RoutingPolicy default/p: spec.routes[0].lanes[0]")
