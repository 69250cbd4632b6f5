"""Render the krew manifest of a release from krew-noderecover.yaml.tmpl (stdlib only).

    python3 hack/release/krew_manifest.py --version v0.1.0 --repository OWNER/NAME \
        --checksums dist/sha256sums.txt > noderecover.yaml

``--checksums``: ``sha256sum`` output for the plugin archives, named
``kubectl-noderecover_<version>_<os>_<arch>.tar.gz``; every platform of PLATFORMS must be
there. Each platform's ``uri`` is the archive's download address on the release.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "krew-noderecover.yaml.tmpl"
#: (os, arch) of the archives the release builds, as krew's selector labels name them.
PLATFORMS: tuple[tuple[str, str], ...] = (
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
)
_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")


def archive_name(version: str, os_name: str, arch: str) -> str:
    return f"kubectl-noderecover_{version}_{os_name}_{arch}.tar.gz"


def read_checksums(text: str) -> dict[str, str]:
    """``sha256sum`` lines -> {file name: hex digest}."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"not a sha256 digest: {line!r}")
        out[name.lstrip("*").rsplit("/", 1)[-1]] = digest
    return out


def render(version: str, repository: str, checksums: dict[str, str]) -> str:
    if not _VERSION.match(version):
        raise ValueError(f"not a release tag vMAJOR.MINOR.PATCH: {version!r}")
    blocks = []
    for os_name, arch in PLATFORMS:
        name = archive_name(version, os_name, arch)
        if name not in checksums:
            raise ValueError(f"no checksum for {name}")
        blocks.append(
            f"    - selector:\n"
            f"        matchLabels:\n"
            f"          os: {os_name}\n"
            f"          arch: {arch}\n"
            f"      uri: https://github.com/{repository}/releases/download/{version}/{name}\n"
            f"      sha256: {checksums[name]}\n"
            f"      bin: kubectl-noderecover\n"
            f"      files:\n"
            f"        - from: kubectl-noderecover\n"
            f"          to: .\n"
            f"        - from: LICENSE\n"
            f"          to: .\n"
        )
    return Template(TEMPLATE.read_text()).substitute(
        version=version, repository=repository, platforms="".join(blocks).rstrip("\n")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True, help="the release tag, e.g. v0.1.0")
    p.add_argument("--repository", required=True, help="OWNER/NAME on GitHub")
    p.add_argument("--checksums", required=True, type=Path, help="sha256sum output")
    args = p.parse_args(argv)
    try:
        text = render(args.version, args.repository, read_checksums(args.checksums.read_text()))
    except ValueError as exc:
        print(f"krew_manifest: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
