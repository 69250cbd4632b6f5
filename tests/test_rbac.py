"""Least privilege, both ways: manifests/base/rbac.yaml grants exactly the API calls declared in
noderecover.kube.permissions.API_CALLS; every call noderecover makes in the unit suite is declared
(tests/conftest.py checks after each test); every declared call is made (this file's last test,
run after the whole suite)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from noderecover.kube.permissions import (
    API_CALLS,
    CLUSTER,
    OWN_NAMESPACE,
    Permission,
    declared,
    permission_of,
)
from tests.conftest import ANY_API_CALL_MODULES, API_CALLS_MADE, TOOLS_MODULES

TESTS = Path(__file__).resolve().parent
RBAC = TESTS.parent / "manifests" / "base" / "rbac.yaml"

# Declared ahead of the code that makes it (the drain's PDB read, another branch of issue 12):
# granted now, so the drain change needs no RBAC change. Once that code is in, the last test
# fails until the entry is removed from here.
# Granted ahead of the code that makes the call (empty: every grant is used today).
NOT_MADE_YET: frozenset[Permission] = frozenset()


def granted(docs: list[dict[str, Any]]) -> set[Permission]:
    """(group, resource, verb, namespace) of every rule bound to noderecover's ServiceAccount;
    the namespace is CLUSTER for the ClusterRole, OWN_NAMESPACE for the SA's own namespace."""
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    own = sa["metadata"]["namespace"]
    bound: set[tuple[str, str, str]] = set()  # (kind, namespace, role name)
    for d in docs:
        if d["kind"] not in {"ClusterRoleBinding", "RoleBinding"}:
            continue
        subjects = {(s["kind"], s["name"], s.get("namespace")) for s in d["subjects"]}
        assert subjects == {("ServiceAccount", sa["metadata"]["name"], own)}, d["metadata"]
        ns = d["metadata"].get("namespace", CLUSTER)
        bound.add((d["roleRef"]["kind"], ns, d["roleRef"]["name"]))
    out: set[Permission] = set()
    for d in docs:
        if d["kind"] not in {"ClusterRole", "Role"}:
            continue
        ns = d["metadata"].get("namespace", CLUSTER)
        assert (d["kind"], ns, d["metadata"]["name"]) in bound, f"unbound {d['metadata']}"
        scope = OWN_NAMESPACE if ns == own else ns
        for rule in d["rules"]:
            assert "nonResourceURLs" not in rule, rule
            # Names only where they narrow a read of one object: the fence Secret, the pause
            # ConfigMap and the policy CRD (a LIST and watch with a fieldSelector on its name).
            if "resourceNames" in rule:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
                assert rule["resources"] in (
                    ["secrets"],
                    ["configmaps"],
                    ["customresourcedefinitions"],
                ), rule
                if rule["resources"] == ["secrets"]:
                    assert rule["verbs"] == ["get"], rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                        out.add(Permission(group, resource, verb, scope))
    return out


def test_rbac_yaml_grants_exactly_the_declared_calls() -> None:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    grants = granted(docs)
    assert sorted(grants - set(API_CALLS)) == [], "granted, never declared as used"
    assert sorted(set(API_CALLS) - grants) == [], "declared as used, not granted"


def test_pods_get_is_not_granted() -> None:
    """Issue 12: no code path reads a single pod."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    assert Permission("", "pods", "get") not in granted(docs)


def test_the_check_catches_an_unused_grant() -> None:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    assert granted(docs) - set(API_CALLS) == {Permission("", "secrets", "get")}


@pytest.mark.parametrize(
    ("method", "path", "query", "needed"),
    [
        ("GET", "/api/v1/nodes", {"limit": "500"}, Permission("", "nodes", "list")),
        ("GET", "/api/v1/nodes", {"watch": "true"}, Permission("", "nodes", "watch")),
        ("GET", "/api/v1/nodes", {"watch": "1"}, Permission("", "nodes", "watch")),
        ("GET", "/api/v1/nodes/w1", {}, Permission("", "nodes", "get")),
        ("PATCH", "/api/v1/nodes/w1", {}, Permission("", "nodes", "patch")),
        ("DELETE", "/api/v1/nodes/w1", {}, Permission("", "nodes", "delete")),
        ("GET", "/api/v1/pods", {"fieldSelector": "x"}, Permission("", "pods", "list")),
        ("GET", "/api/v1/namespaces/a/pods/p", {}, Permission("", "pods", "get", "a")),
        ("DELETE", "/api/v1/namespaces/a/pods/p", {}, Permission("", "pods", "delete", "a")),
        (
            "POST",
            "/api/v1/namespaces/a/pods/p/eviction",
            {},
            Permission("", "pods/eviction", "create", "a"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/a/pods",
            {},
            Permission("", "pods", "deletecollection", "a"),
        ),
        (
            "GET",
            "/apis/policy/v1/namespaces/a/poddisruptionbudgets",
            {},
            Permission("policy", "poddisruptionbudgets", "list", "a"),
        ),
        (
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/noderecover",
            {},
            Permission("coordination.k8s.io", "leases", "update", "ops"),
        ),
        ("GET", "/version", {}, None),
        ("GET", "/api/v1", {}, None),
    ],
)
def test_permission_of_a_request(
    method: str, path: str, query: dict[str, str], needed: Permission | None
) -> None:
    assert permission_of(method, path, query) == needed


def test_declared_matches_namespaces_like_the_roles_do() -> None:
    leases = ("coordination.k8s.io", "leases")
    own = declared(Permission(*leases, "update", "ops"))
    assert own == Permission(*leases, "update", OWN_NAMESPACE)
    node_lease = declared(Permission(*leases, "get", "kube-node-lease"))
    assert node_lease == Permission(*leases, "get", "kube-node-lease")
    assert declared(Permission("", "events", "create", "default")) is not None
    assert declared(Permission("", "pods", "delete", "any")) == Permission("", "pods", "delete")
    assert declared(Permission("", "pods", "get", "any")) is None
    assert declared(Permission("", "configmaps", "delete", "default")) is None


def test_the_fence_secret_is_granted_by_name_only() -> None:
    """GET of exactly the Secret the fence configuration names (docs/install.md, "RBAC"), never of
    every Secret of the namespace."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    rules = [r for d in docs if d["kind"] in {"Role", "ClusterRole"} for r in d["rules"]]
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["noderecover-fence"],
            "verbs": ["get"],
        }
    ]


def test_every_declared_call_is_made_by_the_unit_suite(request: pytest.FixtureRequest) -> None:
    """Runs last (tests/conftest.py orders it). Skipped when a subset was asked for (files
    named, -k, --lf): a subset makes only some of the calls. A run over the whole tests/
    folder (the test command's unit part) that lacks a unit module fails instead: that skip
    would hide the check in every run."""
    config = request.config
    ran = {Path(str(item.path)).name for item in request.session.items}
    suite = {p.name for p in TESTS.glob("test_*.py")} - ANY_API_CALL_MODULES - TOOLS_MODULES
    missing_modules = suite - ran
    subset = (
        config.args_source is not pytest.Config.ArgsSource.TESTPATHS
        or config.option.keyword
        or getattr(config.option, "lf", False)
    )
    if subset:
        pytest.skip(f"a subset of the unit suite ran (missing: {sorted(missing_modules)[:3]}...)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Each worker records only the calls of its own share of the tests; the test
        # command's unit part runs in one process, where this check runs.
        pytest.skip("the unit suite is split across xdist workers: its calls are per worker")
    assert not missing_modules, f"unit modules not collected: {sorted(missing_modules)}"
    never = set(API_CALLS) - API_CALLS_MADE - NOT_MADE_YET
    assert sorted(never) == [], "declared (and granted) but never requested in the unit suite"
    assert sorted(NOT_MADE_YET & API_CALLS_MADE) == [], "now made: drop it from NOT_MADE_YET"
