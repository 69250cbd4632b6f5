"""The testkit's image build (noderecover_testkit.image) without running the builder: its cache
keys follow exactly the inputs, the host settings lent to the build, the argv of a run, and the
message when the host tools cannot be installed. The real build and run: tests/e2e/test_image.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from noderecover_testkit import image, versions
from noderecover_testkit.build import BuildError

from tests.venvs import ROOT, copy_checkout


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NODERECOVER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files the image build reads, copied."""
    return copy_checkout(
        tmp_path / "co",
        "Dockerfile",
        ".dockerignore",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "src",
    )


def test_the_dockerfile_copies_the_runtime_package_only() -> None:
    assert image.copied_sources((ROOT / "Dockerfile").read_text()) == [
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "src",
    ]


def test_the_base_key_follows_its_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    key = image.base_key()
    assert image.base_image() == f"localhost/noderecover-base:{key}"
    monkeypatch.setattr(versions, "BASE_PACKAGES", (*versions.BASE_PACKAGES, "fence-agents"))
    assert image.base_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(versions, "DEBIAN_SUITE", "trixie")
    assert image.base_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(versions, "DEBIAN_VARIANT", "minbase")
    assert image.base_key() != key
    monkeypatch.undo()
    assert image.base_key() == key


def test_the_image_key_follows_what_the_build_reads(checkout: Path) -> None:
    key = image.image_key(checkout)
    assert image.image_key(checkout) == key
    # What the build context ignores, or the build never copies, changes nothing.
    (checkout / "src" / "noderecover" / "__pycache__").mkdir(exist_ok=True)
    (checkout / "src" / "noderecover" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"x")
    (checkout / "src" / "noderecover.egg-info").mkdir(exist_ok=True)
    (checkout / "src" / "noderecover.egg-info" / "PKG-INFO").write_text("x")
    (checkout / "tests").mkdir()
    (checkout / "tests" / "test_x.py").write_text("x = 1\n")
    assert image.image_key(checkout) == key
    # A source file, the Dockerfile, .dockerignore: a new image.
    for name in ("src/noderecover/__init__.py", "Dockerfile", ".dockerignore", "LICENSE"):
        f = checkout / name
        before = f.read_bytes()
        f.write_bytes(before + b"\n# changed\n")
        assert image.image_key(checkout) != key, name
        f.write_bytes(before)
    assert image.image_key(checkout) == key
    (checkout / "src" / "noderecover" / "new.py").write_text("")
    assert image.image_key(checkout) != key


def test_nothing_is_built_before_the_cache_has_it(cache: Path, checkout: Path) -> None:
    assert image.image_root() == cache / "image"
    assert image.built(checkout) is None
    assert not image.has_image(image.image_name(checkout))


def test_the_hosts_pip_settings_are_lent_to_the_build_by_bind_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in ("PIP_CERT", "PIP_INDEX_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(image, "_pip_config", lambda: {})
    assert image._host_network_settings(tmp_path) == []
    monkeypatch.undo()
    for k in ("PIP_CERT", "PIP_INDEX_URL"):
        monkeypatch.delenv(k, raising=False)
    # From pip's config file, as the host's pip reads it.
    conf_file = tmp_path / "host-pip.conf"
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf_file))
    conf_file.write_text("[global]\ncert = /etc/host-ca.pem\ntimeout = 60\n")
    assert image._pip_config()["cert"] == "/etc/host-ca.pem"
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(ca))
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    args = image._host_network_settings(tmp_path)
    assert args == [
        "--volume",
        f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro",
        "--volume",
        f"{tmp_path / 'pip.conf'}:/etc/pip.conf:ro",
    ]
    conf = (tmp_path / "pip.conf").read_text().splitlines()
    assert conf == [
        "[global]",
        "cert = /etc/ssl/certs/ca-certificates.crt",
        "index-url = https://pypi.example/simple",
    ]


def test_a_run_is_on_the_host_network_as_the_given_user_with_read_only_mounts(
    cache: Path,
) -> None:
    argv = image.run_argv(
        "ctr", "65532:65532", [(Path("/tmp/k"), "/etc/k")], {"POD_NAME": "a"}, ["noderecover"]
    )
    root = cache / "image"
    assert argv[:7] == [
        "buildah",
        "--root",
        str(root / "storage"),
        "--runroot",
        str(root / "run"),
        "--storage-driver",
        "vfs",
    ]
    rest = argv[7:]
    assert rest[: rest.index("ctr")] == [
        "run",
        "--network",
        "host",
        "--user",
        "65532:65532",
        "--volume",
        "/tmp/k:/etc/k:ro",
        "--env",
        "POD_NAME=a",
    ]
    assert rest[rest.index("ctr") :] == ["ctr", "--", "noderecover"]
    assert image.buildah_env()["BUILDAH_ISOLATION"] == "chroot"


def test_missing_host_tools_without_apt_fail_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name: None if name in ("buildah", "apt-get") else real(name)
    )
    with pytest.raises(BuildError, match=r"buildah missing: install the Debian packages"):
        image.ensure_host_tools()


def test_the_summary_reports_the_sizes() -> None:
    b = image.Built(
        name="localhost/noderecover:k",
        id="i",
        size=203_000_000,
        compressed=64_000_000,
        base_size=121_000_000,
        build_seconds=45.0,
        base="localhost/noderecover-base:b",
    )
    assert b.summary() == (
        "image localhost/noderecover:k: 203 MB uncompressed, 64 MB compressed (base 121 MB, "
        "the Dockerfile's layers 82 MB); built in 45s"
    )
