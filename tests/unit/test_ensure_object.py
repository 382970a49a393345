"""Which existing objects the operator may bring in line with what it wants, and which it must
leave alone (`kube.ensure_object`). The same rules against a real API server are in
tests/integration/test_operator.py."""

from __future__ import annotations

from typing import Any, cast

import pytest

from laneway_operator.configmaps import config_map_body
from laneway_operator.kube import Kube, NameTaken, ensure_object

POLICY = {"metadata": {"name": "bot", "namespace": "team-a", "uid": "uid-now"}}
COLLECTION = "/api/v1/namespaces/team-a/configmaps"


class Objects:
    """The three calls ensure_object makes, on one stored object."""

    def __init__(self, current: dict[str, Any] | None) -> None:
        self.current = current
        self.patches: list[dict[str, Any]] = []

    async def get(self, path: str) -> dict[str, Any] | None:
        assert path == f"{COLLECTION}/laneway-bot"
        return self.current

    async def create(self, path: str, body: dict[str, Any]) -> None:
        self.current = body

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)


async def ensure(objects: Objects) -> str:
    """ensure_object for the policy's ConfigMap with new text, against `objects`."""
    body = config_map_body(POLICY, "new", "v2")
    return await ensure_object(cast(Kube, objects), COLLECTION, body, ("data",))


def existing(**metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"config.json": "old"},
            "metadata": {"name": "laneway-bot", "namespace": "team-a", **metadata}}


LANEWAY_LABELS = {"app.kubernetes.io/managed-by": "laneway-operator",
                  "routing.laneway.dev/policy": "bot"}


def owner(uid: str, kind: str = "RoutingPolicy", name: str = "bot") -> dict[str, Any]:
    return {"apiVersion": "routing.laneway.dev/v1alpha1", "kind": kind, "name": name,
            "uid": uid, "controller": True}


@pytest.mark.parametrize(
    "current",
    [
        existing(labels=LANEWAY_LABELS, ownerReferences=[owner("uid-now")]),
        # A policy deleted and made again: its old objects wait for the garbage collector.
        existing(labels=LANEWAY_LABELS, ownerReferences=[owner("uid-before")]),
        # Laneway's labels and no controller (someone removed the owner reference).
        existing(labels=LANEWAY_LABELS),
    ],
)
async def test_the_operators_own_objects_are_brought_in_line(current: dict[str, Any]) -> None:
    objects = Objects(current)

    result = await ensure(objects)

    assert result == "updated"
    assert objects.patches[0]["data"] == {"config.json": "new"}


@pytest.mark.parametrize(
    ("current", "why"),
    [
        (existing(), "it has no owner and lacks the label app.kubernetes.io/managed-by"),
        (existing(labels={"app.kubernetes.io/managed-by": "helm"}), "lacks the label"),
        (
            existing(labels=LANEWAY_LABELS,
                     ownerReferences=[owner("uid-x", kind="Deployment", name="web")]),
            "it is controlled by Deployment web",
        ),
        (existing(ownerReferences=[owner("uid-y", name="other")]),
         "it is controlled by RoutingPolicy other"),
    ],
)
async def test_objects_someone_else_made_are_left_alone_with_the_fix_in_the_error(
    current: dict[str, Any], why: str
) -> None:
    objects = Objects(current)

    with pytest.raises(NameTaken) as info:
        await ensure(objects)

    assert objects.patches == []
    assert "ConfigMap team-a/laneway-bot exists and was not made by Laneway" in str(info.value)
    assert why in str(info.value) and "delete or rename it" in str(info.value)


async def test_a_missing_object_is_created() -> None:
    objects = Objects(None)

    result = await ensure(objects)

    assert result == "created"
    assert objects.current is not None and objects.current["data"] == {"config.json": "new"}
