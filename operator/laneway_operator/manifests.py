"""Reading ModelLane and RoutingPolicy manifests from files, for the offline commands.

`laneway compile`, `laneway explain` and `laneway eval` call `compile_files` (or the three steps
it is made of: `load_manifests`, `select_policy`, `compiler.compile_policy`). Every problem is a
`laneway.errors.BadInput` whose message names the file, the field and the fix, so the command
exits with code 2. The operator does not use this module; it reads objects from the API server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from laneway.errors import BadInput
from laneway_operator.compiler import GROUP, CompileError, compile_policy

log = logging.getLogger(__name__)

KINDS = ("ModelLane", "RoutingPolicy")
VERSION = "v1alpha1"
SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's parser when PyYAML was built with it: the same safe loading, several times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Manifest(dict[str, Any]):
    """One object from a manifest file; `source` is the file it came from, for messages."""

    source: str = "<unknown>"


def load_manifests(paths: list[str]) -> list[dict[str, Any]]:
    """Every object in the given files and folders (`*.yaml`, `*.yml`, `*.json`, sorted).

    Several documents per file and `kind: List` wrappers are read. Laneway kinds are checked;
    other Kubernetes objects (Namespace, Secret, ...) are skipped, since `kubectl apply` would
    take the same files.
    """
    objects: list[dict[str, Any]] = []
    for path in _expand(paths):
        for obj in _read_file(path):
            if _is_ours(obj, path):
                objects.append(obj)
    return objects


def select_policy(
    objs: Iterable[Mapping[str, Any]], name: str, namespace: str | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The RoutingPolicy `name` and the ModelLanes of its namespace, by name.

    An object without `metadata.namespace` belongs to `namespace` (like `kubectl apply -n`);
    without `namespace`, a policy without one is in `default` and lanes without one join the
    policy's namespace. Without `namespace`, the policy name must be unique across namespaces.
    """
    objs = list(objs)
    policy = _find_policy(objs, name, namespace)
    ns = _namespace(policy, namespace)
    lanes: dict[str, dict[str, Any]] = {}
    for obj in objs:
        if obj.get("kind") != "ModelLane" or _namespace(obj, namespace or ns) != ns:
            continue
        lane_name = obj["metadata"]["name"]
        if lane_name in lanes:
            raise BadInput(
                f"{_source(obj)}: ModelLane {ns}/{lane_name} is defined twice (also in "
                f"{_source(lanes[lane_name])}); keep one"
            )
        lanes[lane_name] = _with_namespace(obj, ns)
    return _with_namespace(policy, ns), lanes


def compile_files(paths: list[str], policy: str, namespace: str | None) -> dict[str, Any]:
    """Load manifests, pick the policy and compile it; any problem is a BadInput."""
    objs = load_manifests(paths)
    selected, lanes = select_policy(objs, policy, namespace)
    try:
        return compile_policy(selected, lanes)
    except CompileError as exc:
        culprit = selected
        for lane in lanes.values():
            if exc.resource == f"ModelLane {_namespace(lane, None)}/{lane['metadata']['name']}":
                culprit = lane
        raise BadInput(f"{_source(culprit)}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Files.


def _expand(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise BadInput(f"{raw}: no manifests (*.yaml, *.yml, *.json) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise BadInput(f"{raw}: no such file or folder; pass a manifest file or a folder")
    return files


def _read_file(path: Path) -> list[Manifest]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read the file: {exc}") from exc
    try:
        docs = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML or JSON: {exc}; fix the syntax") from exc
    objects: list[Manifest] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue  # an empty document between two `---`
        for obj in _unwrap(doc, f"{path}: document {index + 1}"):
            manifest = Manifest(obj)
            manifest.source = str(path)
            objects.append(manifest)
    return objects


def _unwrap(doc: Any, where: str) -> list[dict[str, Any]]:
    """The objects in one document: itself, or the items of a `kind: List`."""
    if not isinstance(doc, dict):
        raise BadInput(f"{where}: must be a Kubernetes object with apiVersion and kind")
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise BadInput(f"{where}: {key} is missing; every object needs apiVersion and kind")
    if doc["kind"] != "List":
        return [doc]
    items = doc.get("items")
    if not isinstance(items, list):
        raise BadInput(f"{where}: items must be a list of objects in a kind: List")
    return [obj for i, item in enumerate(items) for obj in _unwrap(item, f"{where} items[{i}]")]


def _is_ours(obj: Manifest, path: Path) -> bool:
    """True for a valid Laneway object; False for other kinds; BadInput for broken ones."""
    group, _, version = obj["apiVersion"].rpartition("/")
    kind = obj["kind"]
    if group != GROUP:
        log.debug("%s: skipping %s %s, not a Laneway kind", path, obj["apiVersion"], kind)
        return False
    if kind not in KINDS:
        raise BadInput(
            f"{path}: kind {kind!r} is not a {GROUP} kind; use ModelLane or RoutingPolicy"
        )
    if version != VERSION:
        raise BadInput(
            f"{path}: {kind} apiVersion must be {GROUP}/{VERSION}, got {obj['apiVersion']!r}"
        )
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise BadInput(f"{path}: a {kind} needs metadata.name; add a name")
    if not isinstance(meta.get("namespace", ""), str):
        raise BadInput(f"{path}: {kind} {meta['name']}: metadata.namespace must be a string")
    return True


# ---------------------------------------------------------------------------------------------
# Selection.


def _namespace(obj: Mapping[str, Any], fallback: str | None) -> str:
    return obj["metadata"].get("namespace") or fallback or "default"


def _source(obj: Mapping[str, Any]) -> str:
    return getattr(obj, "source", "<manifest>")


def _with_namespace(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """A copy with metadata.namespace filled in, keeping `source`."""
    copy = Manifest(obj)
    copy.source = _source(obj)
    copy["metadata"] = {**obj["metadata"], "namespace": namespace}
    return copy


def _find_policy(
    objs: list[Mapping[str, Any]], name: str, namespace: str | None
) -> Mapping[str, Any]:
    policies = [obj for obj in objs if obj.get("kind") == "RoutingPolicy"]
    named = [obj for obj in policies if obj["metadata"]["name"] == name]
    if namespace is not None:
        named = [obj for obj in named if _namespace(obj, namespace) == namespace]
    if not named:
        found = ", ".join(f"{_namespace(p, namespace)}/{p['metadata']['name']}" for p in policies)
        where = f" in namespace {namespace}" if namespace is not None else ""
        raise BadInput(
            f"no RoutingPolicy named {name!r}{where} in the given files; "
            + (f"found: {found}" if found else "they hold no RoutingPolicy")
        )
    namespaces = sorted({_namespace(obj, namespace) for obj in named})
    if len(namespaces) > 1:
        raise BadInput(
            f"RoutingPolicy {name!r} exists in namespaces {', '.join(namespaces)}; "
            "choose one with -n"
        )
    if len(named) > 1:
        files = ", ".join(_source(obj) for obj in named)
        raise BadInput(
            f"RoutingPolicy {namespaces[0]}/{name} is defined more than once ({files}); keep one"
        )
    return named[0]
