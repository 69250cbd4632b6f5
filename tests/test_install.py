"""The README's install lines, run as written in clean virtualenvs (non-editable, so the
packaged data must resolve inside site-packages).

* the demo line installs the runtime and the test control plane: `noderecover demo` starts far
  enough to show its imports and its RBAC (manifests/base, shipped as package data) resolve;
* the runtime line installs no test control plane: `noderecover demo` says how to get it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.venvs import ROOT, copy_checkout, run, sh

BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "testkit", "manifests")


def readme_install_line(heading: str) -> str:
    """The one `pip install` line of the shell blocks under the README heading that starts
    with ``heading``."""
    text = (ROOT / "README.md").read_text()
    section = re.search(rf"^## {re.escape(heading)}.*?(?=^## )", text, re.M | re.S)
    assert section, f"README has no section '## {heading}'"
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", section.group(0), re.S)
    assert blocks, f"README section '## {heading}' has no sh block"
    lines = [ln for block in blocks for ln in block.splitlines() if "pip install" in ln]
    assert len(lines) == 1, lines
    return lines[0].split(" #")[0].strip()


def install(tmp: Path, heading: str) -> Path:
    """Run the README's install line of section ``heading`` in a copy of the checkout; returns
    the folder holding the new ``.venv``."""
    line = readme_install_line(heading)
    assert line.startswith("python3 -m venv .venv && "), line  # a fresh venv, then pip
    work = copy_checkout(tmp, *BUILD_INPUTS)
    sh(line, work)
    return work


def test_readme_lines_install_the_runtime_alone_or_with_the_demo() -> None:
    runtime, demo = readme_install_line("Install"), readme_install_line("Try it")
    assert runtime.endswith("pip install .") and "-e" not in runtime.split()
    assert demo.endswith("pip install . ./testkit") and "-e" not in demo.split()


SNIPPET = """
import json, sys
import noderecover_testkit.demo
from noderecover_testkit import replicas
print(json.dumps({
    "file": replicas.__file__,
    "prefix": sys.prefix,
    "data_links": [p.is_symlink() for p in replicas.DATA.iterdir()],
    "objects": replicas.rbac_objects(),
}))
"""


def test_demo_install_resolves_its_imports_and_rbac(tmp_path: Path) -> None:
    work = install(tmp_path / "demo", "Try it")
    bin_dir = work / ".venv" / "bin"
    helped = run([bin_dir / "noderecover", "demo", "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--keep" in helped.stdout and "--grace" in helped.stdout

    out = run([bin_dir / "python", "-c", SNIPPET], tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert "site-packages" in got["file"] and got["file"].startswith(got["prefix"])
    assert got["data_links"] and not any(got["data_links"])  # copies, not links to a checkout
    want = [
        d
        for name in ("namespace.yaml", "rbac.yaml")
        for d in yaml.safe_load_all((ROOT / "manifests" / "base" / name).read_text())
        if d
    ]
    assert got["objects"] == want
    assert any(o["kind"] == "ClusterRole" for o in got["objects"])


RUNTIME_SNIPPET = """
import importlib.metadata, importlib.util, json, pkgutil
import noderecover
print(json.dumps({
    "testkit": importlib.util.find_spec("noderecover_testkit") is not None,
    "modules": [m.name for m in pkgutil.walk_packages(noderecover.__path__, "noderecover.")],
    "files": [str(f) for f in importlib.metadata.files("noderecover") or ()],
}))
"""


def test_runtime_install_has_no_test_control_plane(tmp_path: Path) -> None:
    work = install(tmp_path / "runtime", "Install")
    bin_dir = work / ".venv" / "bin"
    out = run([bin_dir / "python", "-c", RUNTIME_SNIPPET], tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["testkit"] is False
    assert "noderecover.entry.cli" in got["modules"]
    assert not [m for m in got["modules"] if "testcluster" in m or "testkit" in m]
    assert not [f for f in got["files"] if "testcluster" in f or "testkit" in f]

    demo = run([bin_dir / "noderecover", "demo"], tmp_path)
    assert demo.returncode == 2
    assert demo.stdout == ""
    lines = demo.stderr.splitlines()
    assert len(lines) == 1, demo.stderr
    assert "pip install" in lines[0] and "./testkit" in lines[0]
