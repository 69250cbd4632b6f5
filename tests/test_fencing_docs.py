"""docs/fencing.md's "Worked examples, tested", checked by their consumers: every policy's
spec.fence parses with noderecover's own parser (and its Secret has the keys its provider
reads), every values block renders with the pinned helm against the chart's schema. The real
API server takes every Kubernetes object of the section: tests/e2e/test_policies.py
(server-side dry run). Every policy elsewhere on the page parses too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from noderecover.core.fencing import FenceSpec, Provider, parse_fence_spec, spec_error
from noderecover.core.policies import parse_policy
from noderecover.core.settings import Config

PAGE = Path(__file__).resolve().parents[1] / "docs" / "fencing.md"
SECTION = "## Worked examples, tested"
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def section() -> str:
    """The worked examples: from their heading to the next `## ` heading."""
    text = PAGE.read_text()
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def yaml_blocks(text: str | None = None) -> list[str]:
    return _BLOCK.findall(section() if text is None else text)


def objects() -> list[dict[str, Any]]:
    """The Kubernetes objects of the page (its non-values yaml blocks)."""
    out = []
    for block in yaml_blocks():
        if not block.startswith("# values.yaml"):
            out += [d for d in yaml.safe_load_all(block) if d]
    return out


def values_blocks() -> list[dict[str, Any]]:
    return [yaml.safe_load(b) for b in yaml_blocks() if b.startswith("# values.yaml")]


# The keys each provider reads from its Secret (fencing/redfish.py, aws.py; an agent takes
# any key as --key).
SECRET_KEYS = {
    Provider.REDFISH: {"username", "password"},
    Provider.AWS: {"aws_access_key_id", "aws_secret_access_key"},
    Provider.FENCE_AGENT: {"username", "password"},
}


def test_every_policy_of_the_page_is_valid_and_its_secret_fits() -> None:
    objs = objects()
    policies = [o for o in objs if o["kind"] == "NodeRecoveryPolicy"]
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    assert len(policies) == 5 and len(secrets) == 3, [o["metadata"]["name"] for o in objs]
    providers = set()
    for p in policies:
        name = p["metadata"]["name"]
        parsed = parse_policy(p, Config(fence_command=("/opt/fence/fence.sh",)))
        assert parsed.error is None, f"{name}: {parsed.error}"
        if "fence" not in p["spec"]:
            assert p["spec"].get("fencing") is True
            continue
        spec = parse_fence_spec(p["spec"]["fence"], f"{name}.spec.fence", FenceSpec())
        assert spec_error(spec) is None, name
        assert spec.provider is not None
        providers.add(spec.provider)
        if spec.secret_name:
            assert spec.secret_name in secrets, f"{name}: no example of its Secret"
            keys = set(secrets[spec.secret_name]["stringData"])
            assert SECRET_KEYS[spec.provider] <= keys, (name, keys)
    assert providers == {Provider.REDFISH, Provider.AWS, Provider.FENCE_AGENT}


@pytest.mark.tools  # the pinned helm
def test_every_values_block_renders_with_the_charts_schema(tmp_path: Path) -> None:
    from tests.charts import render

    blocks = values_blocks()
    assert len(blocks) == 4
    for i, values in enumerate(blocks):
        path = tmp_path / f"values-{i}.yaml"
        path.write_text(yaml.safe_dump(values))
        docs = render("--values", str(path))
        (dep,) = [d for d in docs if d["kind"] == "Deployment"]
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        for flag, value in values.get("flags", {}).items():
            assert f"--{flag}={value}" in args, (flag, args)
        if config := values.get("fencing", {}).get("config"):
            assert "--fence-config=/etc/noderecover/fence/fence.json" in args
            (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
            raw = yaml.safe_load(cm["data"]["fence.json"])
            assert raw == config
            parse_fence_spec(raw, "fencing.config", FenceSpec())


def test_every_policy_on_the_page_parses() -> None:
    policies = [
        d
        for b in yaml_blocks(PAGE.read_text())
        if not b.startswith("# values.yaml")
        for d in yaml.safe_load_all(b)
        if d and d.get("kind") == "NodeRecoveryPolicy"
    ]
    assert len(policies) >= 8
    for p in policies:
        parsed = parse_policy(p, Config(fence_command=("/opt/fence/fence.sh",)))
        assert parsed.error is None, f"{p['metadata']['name']}: {parsed.error}"
