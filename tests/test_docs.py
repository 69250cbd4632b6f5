"""The docs: the README (the front page) and the MkDocs site under docs/ (mkdocs.yml).

* No link leaves the repository except to public upstream pages: every http(s) address in
  README.md and docs/*.md outside code is on an allowlisted host (and, on github.com, of an
  allowlisted owner); no relative link resolves outside the repository; the README's relative
  links name files that exist, and headings that exist in them.
* `mkdocs build --strict` (marker `tools`, like the helm / promtool checks) passes: a broken
  link, a broken anchor or a page left out of the nav is a warning, and a warning fails the
  build (mkdocs.yml's `validation:`). The checker is attacked too: a broken anchor, a missing
  page and a page outside the nav each fail it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

#: Public upstream pages a page may link to (a host, and its subdomains).
ALLOWED_HOSTS = frozenset(
    {
        "kubernetes.io",
        "k8s.io",  # kwok.sigs.k8s.io, cluster-api.sigs.k8s.io
        "karpenter.sh",
        "docs.openstack.org",  # sushy, the Redfish library
        "helm.sh",
        "prometheus.io",
        "www.mkdocs.org",
        "squidfunk.github.io",  # Material for MkDocs
    }
)
#: On github.com, only these owners (upstream projects, and this repository's own).
ALLOWED_GITHUB_OWNERS = frozenset(
    {
        "kubernetes",
        "kubernetes-sigs",
        "medik8s",
        "ClusterLabs",
        "noderecover",
    }
)

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
URL = re.compile(r"https?://[^\s)>\]\"'`]+")
MD_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced blocks and code spans (where an address is not a link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def host_allowed(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "github.com":
        owner = parts.path.strip("/").split("/")[0]
        return owner in ALLOWED_GITHUB_OWNERS
    return any(host == h or host.endswith("." + h) for h in ALLOWED_HOSTS)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (where the README is read)."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> set[str]:
    return {
        github_slug(m.group(1))
        for m in re.finditer(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), re.M)
    }


def test_the_scanner_finds_links_outside_code_only() -> None:
    text = "see [x](https://evil.example/a) and <http://b.example>\n`https://c.example`\n"
    text += "```sh\ncurl https://d.example\n```\n"
    assert URL.findall(prose(text)) == ["https://evil.example/a", "http://b.example"]
    assert host_allowed("https://kwok.sigs.k8s.io")
    assert host_allowed("https://github.com/medik8s/self-node-remediation")
    assert not host_allowed("https://github.com/someone/fork")
    assert not host_allowed("https://kubernetes.io.evil.example/")
    assert not host_allowed("https://notkarpenter.sh/")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository_but_for_public_upstream_pages(page: Path) -> None:
    text = prose(page.read_text(encoding="utf-8"))
    foreign = [u for u in URL.findall(text) if not host_allowed(u)]
    assert foreign == [], f"{page.name}: links to hosts not on the allowlist"
    for target in MD_LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        resolved = (page.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"


def test_the_readme_links_name_files_and_headings_that_exist() -> None:
    links = [t for t in MD_LINK.findall(prose(README.read_text())) if "://" not in t]
    assert links, "the README links the docs"
    for target in links:
        path, _, anchor = target.partition("#")
        file = (ROOT / path) if path else README
        assert file.exists(), target
        if anchor:
            assert file.suffix == ".md", target
            assert anchor in headings(file), f"{target}: no such heading"


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first_screen = "\n".join(text.splitlines()[:30])
    assert "noderecover demo" in first_screen  # what it is, and how to try it
    for word in ("liberator", "seed", "../shared"):
        assert word not in text.lower(), word


def mkdocs_config() -> dict[str, object]:
    data = yaml.safe_load((ROOT / "mkdocs.yml").read_text())  # plain YAML: no !ENV or !!python
    assert isinstance(data, dict)
    return data


def test_the_site_uses_no_plugin_that_needs_the_network() -> None:
    config = mkdocs_config()
    plugins = config.get("plugins") or []
    assert isinstance(plugins, list)
    names = {p if isinstance(p, str) else next(iter(p)) for p in plugins}
    assert names <= {"search"}, names  # not social (fetches fonts), not privacy (downloads)
    theme = config["theme"]
    assert isinstance(theme, dict) and theme.get("font") is False  # no web fonts
    validation = config["validation"]
    assert isinstance(validation, dict)
    for key in ("omitted_files", "absolute_links", "unrecognized_links", "anchors", "not_found"):
        assert validation[key] == "warn", key


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def warnings(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" in ln]


@pytest.mark.tools
def test_mkdocs_build_strict_passes(tmp_path: Path) -> None:
    proc = mkdocs_build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert warnings(proc) == []
    built = {p.stem for p in DOCS.glob("*.md")}
    for stem in built - {"index"}:
        assert (tmp_path / "site" / stem / "index.html").exists(), stem
    assert (tmp_path / "site" / "index.html").exists()


@pytest.mark.tools
@pytest.mark.parametrize(
    ("page", "append", "says"),
    [
        ("index.md", "\n[x](safety.md#no-such-anchor)\n", "does not contain an anchor"),
        ("index.md", "\n[x](#nowhere)\n", "no such anchor"),
        ("index.md", "\n[x](no-such-page.md)\n", "not found among documentation files"),
        ("orphan.md", "# Orphan\n", 'not included in the "nav"'),
    ],
    ids=["anchor-on-another-page", "anchor-on-this-page", "missing-page", "page-not-in-nav"],
)
def test_mkdocs_build_strict_fails_on_a_broken_link(
    tmp_path: Path, page: str, append: str, says: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copy(README, copy / "README.md")  # comparison.md includes its table
    with (copy / "docs" / page).open("a") as f:
        f.write(append)
    proc = mkdocs_build(copy, tmp_path / "site")
    assert proc.returncode != 0
    assert any(says in w for w in warnings(proc)), proc.stdout + proc.stderr
