"""The write path is the only door to the API server's mutating verbs (issue 20).

`lint-imports` (pyproject.toml) allows only controller.writes, kube.election and
entry.kubectl to import `noderecover.kube.mutating`. This test closes the other door: no
module of the runtime package hands `request` a method other than GET, as a literal or
otherwise (a variable method could be anything). `kube/mutating.py` itself, which sends
them, and `kube/client.py`, the transport, are the exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "noderecover"
TRANSPORT = {SRC / "kube" / "mutating.py", SRC / "kube" / "client.py"}
READS = {"GET", "HEAD", "OPTIONS"}


def offending_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every `<x>.request(method, ...)` whose method is not a read."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "request"
        ):
            continue
        method = node.args[0] if node.args else None
        for kw in node.keywords:
            if kw.arg == "method":
                method = kw.value
        if isinstance(method, ast.Constant) and method.value in READS:
            continue
        what = ast.unparse(method) if method is not None else "(no method)"
        found.append((node.lineno, what))
    return found


def test_no_module_sends_a_mutating_request_outside_the_write_path() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        if path in TRANSPORT:
            continue
        for line, what in offending_calls(ast.parse(path.read_text(), str(path))):
            bad.append(f"{path.relative_to(SRC)}:{line}: request({what}, ...)")
    assert not bad, "mutating calls outside noderecover.kube.mutating:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("code", "caught"),
    [
        ('await kube.request("GET", path)', False),
        ('await kube.request("PATCH", path, body=b)', True),
        ("await kube.request(method, path)", True),
        ('await self._kube.request(method="DELETE", path=p)', True),
        ('await kube.request("HEAD", path)', False),
    ],
)
def test_the_check_catches_what_it_should(code: str, caught: bool) -> None:
    tree = ast.parse(f"async def f():\n    {code}\n")
    assert bool(offending_calls(tree)) is caught
