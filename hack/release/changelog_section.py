"""Print one version's section of CHANGELOG.md (keep-a-changelog), for the release notes.

    python3 hack/release/changelog_section.py 0.1.0 [CHANGELOG.md]

Exit 1 when the changelog has no ``## [0.1.0] - YYYY-MM-DD`` section: a release is tagged
only once its changes are written down and dated.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")


def sections(text: str) -> dict[str, tuple[str | None, str]]:
    """{version: (date or None, body)} for each ``## [version] - date`` heading."""
    out: dict[str, tuple[str | None, str]] = {}
    current: str | None = None
    date: str | None = None
    body: list[str] = []
    for line in [*text.splitlines(), "## [end]"]:
        m = _HEADING.match(line)
        if m or (line.startswith("[") and "]: " in line):
            if current is not None:
                out[current] = (date, "\n".join(body).strip())
                current = None
            if m and m.group("version") != "end":
                current, date, body = m.group("version"), m.group("date"), []
            continue
        if current is not None:
            body.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    version = args[0].removeprefix("v")
    path = Path(args[1]) if len(args) > 1 else ROOT / "CHANGELOG.md"
    found = sections(path.read_text()).get(version)
    if found is None or found[0] is None:
        print(f"{path.name}: no dated section '## [{version}] - YYYY-MM-DD'", file=sys.stderr)
        return 1
    print(found[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
