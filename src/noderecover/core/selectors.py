"""Kubernetes label selectors (the string form), parsed once and matched locally.

Supports what `kubectl -l` does: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`,
comma-joined (AND). Errors name the offending part so `--node-selector` fails with one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# apimachinery's validation: a label key is a qualified name (IsQualifiedName): an optional
# DNS-1123 subdomain prefix (<= 253) and "/", then a name (<= 63) of [A-Za-z0-9] with -_. inside;
# a value is empty or such a name (IsValidLabelValue). ASCII only, one slash at most.
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_NAME_RE = re.compile(_NAME)
_DNS_SUBDOMAIN_RE = re.compile(_DNS_SUBDOMAIN)
_KEY_TEXT = r"[^\s!=(),]+"
_SET_RE = re.compile(rf"({_KEY_TEXT})[ \t]+(in|notin)[ \t]+\(([^()]*)\)")
NAME_MAX = 63
PREFIX_MAX = 253


def key_error(key: str) -> str | None:
    """Why `key` is not a valid label key (IsQualifiedName), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and "/" in prefix:
        return "at most one '/'"
    if slash:
        if not prefix:
            return "empty prefix before '/'"
        if len(prefix) > PREFIX_MAX or not _DNS_SUBDOMAIN_RE.fullmatch(prefix):
            return f"prefix {prefix!r} is not a DNS subdomain (lowercase, <= {PREFIX_MAX})"
    if not name:
        return "empty name"
    if len(name) > NAME_MAX:
        return f"name part longer than {NAME_MAX} characters"
    if not _NAME_RE.fullmatch(name):
        return "name part must be [A-Za-z0-9], with '-', '_', '.' inside"
    return None


def value_error(value: str) -> str | None:
    """Why `value` is not a valid label value (IsValidLabelValue), or None."""
    if len(value) > NAME_MAX:
        return f"longer than {NAME_MAX} characters"
    if value and not _NAME_RE.fullmatch(value):
        return "must be empty or [A-Za-z0-9], with '-', '_', '.' inside"
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists", "in", "notin"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in {"=", "in"}:
            return present and labels[self.key] in self.values
        # "!=" and "notin" match when the key is absent, like the API server.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(r.key for r in self.requirements)

    def __str__(self) -> str:
        parts = []
        for r in self.requirements:
            vals = sorted(r.values)
            if r.op == "exists":
                parts.append(r.key)
            elif r.op == "!exists":
                parts.append(f"!{r.key}")
            elif r.op in {"=", "!="}:
                parts.append(f"{r.key}{r.op}{vals[0]}")
            else:
                parts.append(f"{r.key} {r.op} ({','.join(vals)})")
        return ",".join(parts)


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, part: str) -> str:
    if (why := key_error(key)) is not None:
        raise ValueError(f"invalid label key {key!r} in {part!r}: {why}")
    return key


def _check_value(value: str, part: str) -> str:
    if (why := value_error(value)) is not None:
        raise ValueError(f"invalid label value {value!r} in {part!r}: {why}")
    return value


def parse_selector(text: str) -> Selector:
    """Parse a label selector; raises ValueError naming the bad requirement."""
    text = text.strip()
    if not text:
        return Selector()
    if text.count("(") != text.count(")"):
        raise ValueError(f"unbalanced parentheses in selector {text!r}")
    reqs: list[Requirement] = []
    for raw in _split_top(text):
        part = raw.strip()
        if not part:
            raise ValueError(f"empty requirement in selector {text!r}")
        if m := _SET_RE.fullmatch(part):
            key, op, inner = m.group(1), m.group(2), m.group(3)
            values = [_check_value(v.strip(), part) for v in inner.split(",")]
            if not any(values):
                raise ValueError(f"empty value set in {part!r}")
            reqs.append(Requirement(_check_key(key, part), op, frozenset(values)))
            continue
        for op_text, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if op_text in part:
                key, _, value = part.partition(op_text)
                reqs.append(
                    Requirement(
                        _check_key(key.strip(), part),
                        op,
                        frozenset({_check_value(value.strip(), part)}),
                    )
                )
                break
        else:
            if part.startswith("!"):
                reqs.append(Requirement(_check_key(part[1:].strip(), part), "!exists"))
            else:
                reqs.append(Requirement(_check_key(part, part), "exists"))
    return Selector(tuple(reqs))


# How selective an anchor is (lower first): one value, a set of values, a key alone.
_ANCHOR_RANK = {"=": 0, "in": 1, "exists": 2}


class SelectorIndex:
    """Which of many selectors match a label set, without trying those that cannot.

    Each selector is filed under one requirement every match must satisfy (its anchor): a
    key and value (`k=v`, `k in (...)`: one entry per value) or a key alone (`k`); a selector
    with no such requirement (only `!=`, `notin`, `!k`, or none at all: it selects every
    node) is tried for every label set. `matching` tries only the selectors filed under the
    labels present, then each of them in full (`Selector.matches`): it returns exactly what
    trying every selector would, at a cost that does not grow with the selectors whose
    anchor the labels do not carry.
    """

    def __init__(self, selectors: Mapping[str, Selector]) -> None:
        self._by_value: dict[tuple[str, str], list[tuple[str, Selector]]] = {}
        self._by_key: dict[str, list[tuple[str, Selector]]] = {}
        self._always: list[tuple[str, Selector]] = []
        for name, sel in selectors.items():
            anchors = [r for r in sel.requirements if r.op in _ANCHOR_RANK]
            if not anchors:
                self._always.append((name, sel))
                continue
            best = min(anchors, key=lambda r: (_ANCHOR_RANK[r.op], len(r.values), r.key))
            if best.op == "exists":
                self._by_key.setdefault(best.key, []).append((name, sel))
            else:
                for value in best.values:
                    self._by_value.setdefault((best.key, value), []).append((name, sel))

    def matching(self, labels: Mapping[str, str]) -> list[str]:
        """The names of the selectors matching `labels`, sorted."""
        found = [name for name, sel in self._always if sel.matches(labels)]
        by_value, by_key = self._by_value, self._by_key
        for item in labels.items():
            for name, sel in by_value.get(item, ()):
                if sel.matches(labels):
                    found.append(name)
            for name, sel in by_key.get(item[0], ()):
                if sel.matches(labels):
                    found.append(name)
        found.sort()
        return found
