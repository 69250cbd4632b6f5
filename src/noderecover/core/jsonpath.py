"""kubectl's `-o jsonpath=TEMPLATE`, the subset `kubectl noderecover` and `noderecover plan`
print with: what kubectl prints for the same data and template (tests/test_jsonpath.py, and
tests/e2e/test_kubectl_plugin.py against the pinned kubectl).

No Python library does kubectl's template syntax (JSONPath libraries such as jsonpath-ng
take JSONPath proper, `$.items[*].name`, not text with `{...}` actions, `{range}`/`{end}`
and string literals), so the subset is here:

- text outside `{...}` as it is;
- `{.a.b}`, `{.items[*].name}`, `{.items[0]}`, `{.items[-1]}`, `{@}`/`{$}` (the current
  object, optionally followed by a path): every value found, space-separated; strings as
  they are, numbers, true/false/null as kubectl prints them (Go's), lists and maps as
  compact JSON with sorted keys; a missing field prints nothing (kubectl's
  --allow-missing-template-keys default);
- `{range PATH}...{end}`: the text between, once for each value PATH finds;
- `{"\\n"}`, `{"\\t"}`, `{'x'}`: string literals (Go's escapes).

Anything else (filters, slices, recursive descent, unions, bracketed keys) is refused when
the template is read, as a BadTemplate (ValueError) of one line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["BadTemplate", "JsonPathError", "Template", "go_json", "go_text", "parse"]


class BadTemplate(ValueError):
    """The template cannot be read (or uses what the subset does not do)."""


class JsonPathError(ValueError):
    """The template cannot be applied to this data (kubectl's "error executing jsonpath")."""


# One step of a path: a field name, "*" (every element of a list) or an int (one element).
Step = str | int


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Path:
    steps: tuple[tuple[str, Step], ...]  # ("field", name) | ("index", n | "*")


@dataclass(frozen=True)
class _Range:
    path: _Path
    body: tuple[_Node, ...]


_Node = _Text | _Path | _Range

_FIELD = re.compile(r"\.([A-Za-z0-9_-]+)")
_INDEX = re.compile(r"\[(\*|-?[0-9]+)\]")
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}
_CODE_ESCAPE = re.compile(r"x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}")


def _unquote(text: str) -> str:
    """A Go string literal, "..." or '...' (strconv.Unquote's escapes, no octal)."""
    quote, body = text[0], text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote:
            raise BadTemplate(f"unquote string {text}: unescaped quote")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        m = _CODE_ESCAPE.match(body, i + 1)
        if m is None:
            raise BadTemplate(f"unquote string {text}: invalid syntax")
        code = int(m.group()[1:], 16)
        if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise BadTemplate(f"unquote string {text}: invalid syntax")
        out.append(chr(code))
        i = m.end()
    return "".join(out)


def _path(text: str) -> _Path:
    """`.a.b[*][0]`, optionally after `@` or `$`: both the current object, as kubectl reads
    them (in a range, `$` is the element too)."""
    rest = text[1:] if text[:1] in ("@", "$") else text
    steps: list[tuple[str, Step]] = []
    i = 0
    while i < len(rest):
        if (m := _FIELD.match(rest, i)) is not None:
            steps.append(("field", m.group(1)))
        elif (m := _INDEX.match(rest, i)) is not None:
            steps.append(("index", "*" if m.group(1) == "*" else int(m.group(1))))
        else:
            raise BadTemplate(
                f"{text!r}: not in the jsonpath subset read here, at {rest[i:]!r} "
                "(fields .name, [*], [N], @, $, range/end, string literals)"
            )
        i = m.end()
    return _Path(tuple(steps))


def _actions(template: str) -> list[tuple[str, str]]:
    """("text", t) and ("action", a) pieces of the template, in order."""
    pieces: list[tuple[str, str]] = []
    i = 0
    while i < len(template):
        start = template.find("{", i)
        if start < 0:
            pieces.append(("text", template[i:]))
            break
        if start > i:
            pieces.append(("text", template[i:start]))
        end = start + 1
        quote = ""
        while end < len(template):  # the closing brace, not one inside a string literal
            ch = template[end]
            if quote:
                if ch == "\\":
                    end += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "}":
                break
            end += 1
        if end >= len(template):
            raise BadTemplate(f"{template[start:]!r}: unclosed action")
        pieces.append(("action", template[start + 1 : end].strip()))
        i = end + 1
    return pieces


@dataclass(frozen=True)
class Template:
    """A parsed template: `render(data)` is what kubectl prints for it."""

    source: str
    nodes: tuple[_Node, ...]

    def render(self, data: Any) -> str:
        """JsonPathError (one line, naming the template) when it does not apply to `data`."""
        out: list[str] = []
        try:
            _render(self.nodes, data, out)
        except JsonPathError as exc:
            raise JsonPathError(f"jsonpath {self.source!r}: {exc}") from None
        return "".join(out)


def parse(template: str) -> Template:
    """The template, read; BadTemplate (one line) when it cannot be."""
    if not template:
        raise BadTemplate("no template given")
    stack: list[tuple[_Path | None, list[_Node]]] = [(None, [])]
    for kind, piece in _actions(template):
        body = stack[-1][1]
        if kind == "text":
            body.append(_Text(piece))
        elif piece[:1] in ("'", '"'):
            if len(piece) < 2 or piece[-1] != piece[0]:
                raise BadTemplate(f"{{{piece}}}: unterminated string")
            body.append(_Text(_unquote(piece)))
        elif piece == "end":
            if len(stack) == 1:
                raise BadTemplate("{end} without {range}")
            path, inner = stack.pop()
            assert path is not None
            stack[-1][1].append(_Range(path, tuple(inner)))
        elif piece.startswith("range ") or piece.startswith("range\t"):
            stack.append((_path(piece[6:].strip()), []))
        else:
            body.append(_path(piece))
    if len(stack) > 1:
        raise BadTemplate("{range} without {end}")
    return Template(template, tuple(stack[0][1]))


def _find(path: _Path, current: Any) -> list[Any]:
    values = [current]
    for kind, step in path.steps:
        found: list[Any] = []
        for v in values:
            if kind == "field":
                if isinstance(v, Mapping) and step in v:
                    found.append(v[step])
                continue
            if not isinstance(v, list):
                raise JsonPathError(f"{_go_kind(v)} is not array or slice")
            if step == "*":
                found.extend(v)
            else:
                assert isinstance(step, int)
                if not -len(v) <= step < len(v):
                    raise JsonPathError(f"array index out of bounds: index {step}, length {len(v)}")
                found.append(v[step])
        values = found
    return values


def _go_kind(v: Any) -> str:
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int64"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    return "<nil>"


def _render(nodes: Sequence[_Node], current: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Path):
            out.append(" ".join(go_text(v) for v in _find(node, current)))
        else:
            for v in _find(node.path, current):
                _render(node.body, v, out)


def _go_float(f: float, *, json_form: bool) -> str:
    """Go's shortest float: fmt's %v (strconv 'g': an exponent from 1e6 up and below 1e-4,
    e+06) or encoding/json's (an exponent from 1e21 up and below 1e-6, e-07 written e-7)."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign = "-" if f < 0 else ""
    _, digit_tuple, exp = Decimal(repr(abs(f))).as_tuple()  # repr: the shortest digits
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    lead = exp + len(digits) - 1  # the power of ten of the first digit
    scientific = (abs(f) < 1e-6 or abs(f) >= 1e21) if json_form else (lead < -4 or lead >= 6)
    if not scientific:
        return sign + format(Decimal(f"{digits}E{exp}"), "f")
    mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
    power = f"{'-' if lead < 0 else '+'}{abs(lead):02d}"
    if json_form and -10 < lead < 0:
        power = f"-{-lead}"
    return f"{sign}{mantissa}e{power}"


def go_json(value: Any) -> str:
    """encoding/json's Marshal of JSON-like data: compact, keys sorted, <, >, &, U+2028 and
    U+2029 escaped."""
    if isinstance(value, float):
        return _go_float(value, json_form=True)
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return "{" + ",".join(f"{go_json(str(k))}:{go_json(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    text = json.dumps(value, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def go_text(value: Any) -> str:
    """One value as kubectl's jsonpath prints it."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value, json_form=False)
    return go_json(value)
