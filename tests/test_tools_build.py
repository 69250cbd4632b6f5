"""The testkit's helm and promtool build: pins in versions.py, their own cache folder (a tool
pin never invalidates the control plane's, nor the other way round), the stamp, the idempotent
fast path, and the built binaries reporting their pins."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from noderecover_testkit import build, versions


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root (NODERECOVER_CACHE_DIR)."""
    monkeypatch.setenv("NODERECOVER_CACHE_DIR", str(tmp_path))
    return tmp_path


def fake_tools(directory: Path, pins: dict[str, str] | None = None) -> None:
    """Executable stand-ins for the tools and a complete stamp of ``pins``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in versions.TOOL_BINARIES:
        (directory / name).write_text("#!/bin/sh\nexit 0\n")
        (directory / name).chmod(0o755)
    (directory / build.MONITORING_CRDS_NAME).write_text("kind: CustomResourceDefinition\n")
    stamp = {"pins": pins or versions.tool_pins(), "go": "go", "complete": True}
    (directory / build.STAMP_NAME).write_text(json.dumps(stamp))


def test_pins_are_plain_versions() -> None:
    for v in (versions.HELM_VERSION, versions.PROMETHEUS_VERSION):
        assert versions._split(v)
    assert versions.HELM_VERSION.startswith("v3.")
    assert "remove_all_sd" in versions.PROMTOOL_TAGS


@pytest.mark.parametrize(
    ("module", "release"), [("v0.316.0", "3.16.0"), ("v0.300.2", "3.0.2"), ("v0.305.11", "3.5.11")]
)
def test_prometheus_module_version_maps_to_the_release(
    module: str, release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(versions, "PROMETHEUS_VERSION", module)
    assert versions.prometheus_release() == release


def test_a_prometheus_2_module_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "PROMETHEUS_VERSION", "v0.55.1")
    with pytest.raises(ValueError, match="Prometheus 3"):
        versions.prometheus_release()


def test_tool_folder_is_its_own(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new tool pin moves the tools folder and leaves the control plane folder alone."""
    cp, tools = build.bin_dir(), build.tools_bin_dir()
    assert cp != tools and cp.parent == tools.parent == cache / "bin"
    monkeypatch.setattr(versions, "HELM_VERSION", "v3.21.4")
    assert build.tools_bin_dir() != tools and build.bin_dir() == cp
    monkeypatch.setattr(versions, "K8S_VERSION", "v1.34.5")
    assert build.bin_dir() != cp


def test_the_control_plane_key_is_unchanged() -> None:
    """The control plane cache built before the tools existed stays valid."""
    assert versions.pin_key() == (
        f"k8s-{versions.K8S_VERSION}_etcd-{versions.ETCD_VERSION}_kwok-{versions.KWOK_VERSION}"
    )
    assert versions.pins() == {
        "kubernetes": versions.K8S_VERSION,
        "etcd": versions.ETCD_VERSION,
        "kwok": versions.KWOK_VERSION,
    }


def test_tools_missing_follows_the_stamp_and_the_files(cache: Path) -> None:
    d = build.tools_bin_dir()
    everything = [*versions.TOOL_BINARIES, build.MONITORING_CRDS_NAME]
    assert build.tools_missing() == everything  # nothing there
    fake_tools(d)
    assert build.tools_missing() == []
    (d / "promtool").chmod(0o644)  # not executable
    assert build.tools_missing() == ["promtool"]
    (d / "promtool").unlink()
    assert build.tools_missing() == ["promtool"]
    (d / build.MONITORING_CRDS_NAME).unlink()
    assert build.tools_missing() == ["promtool", build.MONITORING_CRDS_NAME]
    fake_tools(d, {**versions.tool_pins(), "helm": "v3.0.0"})  # a stamp of other pins
    assert build.tools_missing() == everything


def test_a_promtool_tag_change_is_a_new_pin(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(build.tools_bin_dir())
    monkeypatch.setattr(versions, "PROMTOOL_TAGS", ("netgo",))
    assert build.tools_missing() == [*versions.TOOL_BINARIES, build.MONITORING_CRDS_NAME]


def test_ensure_tools_built_is_a_no_op_when_built(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built: no Go, no lock, no log line; the folder and the tool paths come back."""
    fake_tools(build.tools_bin_dir())
    monkeypatch.setenv("PATH", "/nonexistent")
    logged: list[str] = []
    assert build.ensure_tools_built(log=logged.append) == build.tools_bin_dir()
    assert logged == []
    assert build.tool("helm") == build.tools_bin_dir() / "helm"
    assert build.monitoring_crds() == build.tools_bin_dir() / build.MONITORING_CRDS_NAME
    assert not (cache / "work").exists()


def test_missing_tools_without_go_fail_with_a_clear_message(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(build.BuildError, match="Go toolchain"):
        build.tool("promtool")


def test_an_unknown_tool_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tool"):
        build.tool("kubectl")
    with pytest.raises(ValueError, match="unknown tool"):
        build.expected_tool_version("kubectl")


@pytest.mark.parametrize("name", versions.TOOL_BINARIES)
def test_the_built_tool_reports_its_pin(name: str) -> None:
    """The real cached binaries (built by the test command's build step, or here)."""
    path = build.tool(name)
    assert path.is_file() and os.access(path, os.X_OK)
    out = build.tool_version_output(name, path.parent)
    assert build.expected_tool_version(name) in out, out
    stamp = json.loads((path.parent / build.STAMP_NAME).read_text())
    assert stamp["pins"] == versions.tool_pins() and stamp["complete"] is True


def test_the_generated_monitoring_crds_are_the_two_pinned_kinds() -> None:
    import yaml

    docs = [d for d in yaml.safe_load_all(build.monitoring_crds().read_text()) if d]
    assert [(d["kind"], d["spec"]["group"], d["spec"]["names"]["plural"]) for d in docs] == [
        ("CustomResourceDefinition", "monitoring.coreos.com", p) for p in versions.MONITORING_CRDS
    ]
    for d in docs:
        (version,) = d["spec"]["versions"]
        assert version["name"] == "v1" and version["schema"]["openAPIV3Schema"]["properties"]


def test_versions_command_prints_the_tool_pins() -> None:
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "noderecover_testkit", "versions"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert f"helm={versions.HELM_VERSION}" in proc.stdout
    assert f"tools_bin_dir={build.tools_bin_dir()}" in proc.stdout


def test_actionlint_has_its_own_folder_and_is_a_no_op_when_built(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own pin key (a new actionlint never rebuilds helm or the control plane); built: no
    Go, no lock, no log line."""
    d = build.actionlint_bin_dir()
    assert d == cache / "bin" / f"actionlint-{versions.ACTIONLINT_VERSION}"
    assert d not in (build.tools_bin_dir(), build.bin_dir())
    d.mkdir(parents=True)
    (d / "actionlint").write_text("#!/bin/sh\nexit 0\n")
    (d / "actionlint").chmod(0o755)
    stamp = {"pins": {"actionlint": versions.ACTIONLINT_VERSION}, "go": "go", "complete": True}
    (d / build.STAMP_NAME).write_text(json.dumps(stamp))
    monkeypatch.setenv("PATH", "/nonexistent")
    logged: list[str] = []
    assert build.ensure_actionlint(log=logged.append) == d / "actionlint"
    assert logged == [] and not (cache / "work").exists()
    # Another pin: the stamp no longer matches, so it would build (and needs Go for that).
    monkeypatch.setattr(versions, "ACTIONLINT_VERSION", "v1.7.11")
    with pytest.raises(build.BuildError, match="Go toolchain"):
        build.ensure_actionlint()
