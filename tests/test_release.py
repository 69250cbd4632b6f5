"""The release: its workflow (checked by the pinned actionlint), the krew manifest rendered from
its template, the changelog the notes come from, and the LICENSE."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from noderecover_testkit import build, versions

from tests.venvs import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
RELEASE = ROOT / "hack" / "release"
#: sha256 of the Apache License 2.0 as published (apache.org/licenses/LICENSE-2.0.txt; the
#: same bytes as Debian's /usr/share/common-licenses/Apache-2.0).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, RELEASE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow()["jobs"][job]["steps"]
    return found


def uses(job: str, action: str) -> dict[str, Any]:
    step = next(s for s in steps(job) if str(s.get("uses", "")).startswith(f"{action}@"))
    return step


def script(job: str) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = build.ensure_actionlint()
    return subprocess.run(
        [str(exe), "-no-color", "-oneline", "-shellcheck=", "-pyflakes=", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.tools
def test_actionlint_passes_the_release_workflow_and_catches_a_broken_one(tmp_path: Path) -> None:
    out = actionlint(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr
    # It does check: an unknown runner label and a typo in an expression fail.
    broken = tmp_path / "release.yml"
    text = WORKFLOW.read_text().replace("runs-on: ubuntu-24.04\n", "runs-on: ubuntu-2404\n", 1)
    broken.write_text(text.replace("needs.check.outputs.version", "needs.check.output.version"))
    out = actionlint(broken)
    assert out.returncode == 1
    assert 'label "ubuntu-2404" is unknown' in out.stdout
    assert "output" in out.stdout and "[expression]" in out.stdout


def test_actionlint_is_pinned_and_reports_its_pin() -> None:
    assert build.actionlint_bin_dir().name == "actionlint-v1.7.12"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions.ACTIONLINT_VERSION)


def test_release_runs_on_a_version_tag_only() -> None:
    on = yaml.safe_load(WORKFLOW.read_text())[True]  # YAML 1.1 reads the key `on` as a bool
    assert list(on) == ["push"] and list(on["push"]) == ["tags"]
    assert on["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+"]
    assert workflow()["permissions"] == {"contents": "read"}  # each job asks for more


def test_the_image_is_multi_arch_from_the_projects_dockerfile() -> None:
    push = uses("image", "docker/build-push-action")["with"]
    assert set(push["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert push["context"] == "." and push["push"] is True
    assert "file" not in push and "BASE=" not in push.get("build-args", "")  # default base
    assert "VERSION=${{ needs.check.outputs.version }}" in push["build-args"]
    assert uses("image", "docker/setup-qemu-action") and uses("image", "docker/setup-buildx-action")
    assert workflow()["jobs"]["image"]["permissions"]["packages"] == "write"


def test_the_chart_is_pushed_as_an_oci_artifact_with_the_pinned_helm() -> None:
    assert uses("chart", "azure/setup-helm")["with"]["version"] == "${{ env.HELM_VERSION }}"
    assert workflow()["env"]["HELM_VERSION"] == versions.HELM_VERSION
    assert workflow()["env"]["CHART_REPO"].startswith("oci://ghcr.io/")
    run = script("chart")
    assert 'helm package charts/noderecover --version "$VERSION"' in run
    assert 'helm push "dist/noderecover-$VERSION.tgz" "$CHART_REPO"' in run
    assert (ROOT / "charts" / "noderecover" / "Chart.yaml").is_file()


def test_the_plugin_matrix_builds_every_platform_of_the_krew_manifest() -> None:
    krew = load("krew_manifest")
    matrix = workflow()["jobs"]["plugin"]["strategy"]["matrix"]["include"]
    assert {(m["os"], m["arch"]) for m in matrix} == set(krew.PLATFORMS)
    run = script("plugin")
    assert "hack/release/kubectl_entry.py" in run and (RELEASE / "kubectl_entry.py").is_file()
    env = next(s["env"] for s in steps("plugin") if "env" in s)
    assert env["ARCHIVE"] == (
        "kubectl-noderecover_${{ github.ref_name }}_${{ matrix.os }}_${{ matrix.arch }}.tar.gz"
    )
    assert krew.archive_name("v1.2.3", "linux", "arm64") == (
        "kubectl-noderecover_v1.2.3_linux_arm64.tar.gz"
    )


def test_the_release_job_publishes_notes_archives_and_the_krew_manifest() -> None:
    job = workflow()["jobs"]["release"]
    assert set(job["needs"]) == {"check", "image", "chart", "plugin"}
    assert job["permissions"] == {"contents": "write"}
    run = script("release")
    assert "hack/release/krew_manifest.py" in run and "sha256sum" in run
    assert "gh release create" in run and "--verify-tag" in run
    assert "hack/release/changelog_section.py" in script("check")


def test_the_krew_template_renders_a_valid_plugin_manifest(tmp_path: Path) -> None:
    krew = load("krew_manifest")
    names = [krew.archive_name("v0.1.0", o, a) for o, a in krew.PLATFORMS]
    digests = {n: hashlib.sha256(n.encode()).hexdigest() for n in names}
    sums = tmp_path / "sha256sums.txt"
    sums.write_text("".join(f"{d}  {n}\n" for n, d in digests.items()))
    out = subprocess.run(
        [
            sys.executable,
            str(RELEASE / "krew_manifest.py"),
            "--version",
            "v0.1.0",
            "--repository",
            "noderecover/noderecover",
            "--checksums",
            str(sums),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert doc["kind"] == "Plugin" and doc["metadata"] == {"name": "noderecover"}
    spec = doc["spec"]
    assert spec["version"] == "v0.1.0"
    assert spec["homepage"] == "https://github.com/noderecover/noderecover"
    assert spec["shortDescription"] and len(spec["shortDescription"]) <= 50
    assert "noderecover" in spec["description"]
    assert len(spec["platforms"]) == len(krew.PLATFORMS) == 4
    for p, (os_name, arch), name in zip(spec["platforms"], krew.PLATFORMS, names, strict=True):
        assert p["selector"] == {"matchLabels": {"os": os_name, "arch": arch}}
        assert p["uri"] == (
            f"https://github.com/noderecover/noderecover/releases/download/v0.1.0/{name}"
        )
        assert p["sha256"] == digests[name]
        assert p["bin"] == "kubectl-noderecover"
        assert {f["from"] for f in p["files"]} == {"kubectl-noderecover", "LICENSE"}


def test_the_krew_manifest_refuses_a_missing_archive_or_a_bad_version() -> None:
    krew = load("krew_manifest")
    digests = {
        krew.archive_name("v0.1.0", o, a): "0" * 64 for o, a in krew.PLATFORMS if o == "linux"
    }
    with pytest.raises(ValueError, match=r"no checksum for kubectl-noderecover_v0\.1\.0_darwin"):
        krew.render("v0.1.0", "o/n", digests)
    with pytest.raises(ValueError, match="not a release tag"):
        krew.render("0.1.0", "o/n", digests)
    with pytest.raises(ValueError, match="not a sha256"):
        krew.read_checksums("abc  x.tar.gz\n")


CHANGELOG = (ROOT / "CHANGELOG.md").read_text()


def test_the_changelog_keeps_a_changelog() -> None:
    lines = CHANGELOG.splitlines()
    assert lines[0] == "# Changelog"
    versions = re.findall(r"^## \[([^\]]+)\]", CHANGELOG, re.M)
    assert versions[0] == "Unreleased"
    for heading in re.findall(r"^## .*$", CHANGELOG, re.M):
        assert re.fullmatch(r"## \[(Unreleased|\d+\.\d+\.\d+)\]( - \d{4}-\d{2}-\d{2})?", heading)
    for heading in re.findall(r"^### .*$", CHANGELOG, re.M):
        assert heading[4:] in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    for v in versions:  # each version heading has its link reference
        assert re.search(rf"^\[{re.escape(v)}\]: https://", CHANGELOG, re.M), v
    # The history so far: the first commit's features and this change.
    assert "noderecover plan" in CHANGELOG and "buildah" in CHANGELOG


def test_release_notes_come_from_a_dated_changelog_section(tmp_path: Path) -> None:
    section = load("changelog_section")
    found = section.sections(CHANGELOG)
    assert found["Unreleased"][0] is None and "### Added" in found["Unreleased"][1]
    dated = tmp_path / "CHANGELOG.md"
    dated.write_text(
        "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2027-01-02\n\n### Fixed\n\n- b\n\n"
        "## [0.1.0] - 2026-12-24\n\n### Added\n\n- a\n\n"
        "[Unreleased]: https://x/compare/v0.2.0...HEAD\n[0.2.0]: https://x/v0.2.0\n"
    )

    def notes(version: str, path: Path) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(RELEASE / "changelog_section.py"), version, str(path)]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    out = notes("v0.2.0", dated)
    assert out.returncode == 0 and out.stdout == "### Fixed\n\n- b\n"
    assert notes("0.1.0", dated).stdout == "### Added\n\n- a\n"
    refused = notes("0.1.0", ROOT / "CHANGELOG.md")  # not dated (not released) yet
    assert refused.returncode == 1 and "no dated section" in refused.stderr


def test_the_license_is_the_apache_2_0_text_the_metadata_names() -> None:
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0"
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in (ROOT / "Dockerfile").read_text()
