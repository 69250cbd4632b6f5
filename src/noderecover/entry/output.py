"""`-o FORMAT` of `kubectl noderecover` and `noderecover plan`: json, yaml, name and
jsonpath=TEMPLATE as kubectl prints them (tables are the commands' own)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TextIO

import yaml

from noderecover.core import jsonpath

__all__ = ["Output", "add_output_flag", "emit", "output_type", "to_yaml"]

DATA_FORMATS = ("json", "yaml", "name", "jsonpath")


@dataclass(frozen=True)
class Output:
    """A parsed `-o`: "" (the table), "wide", "json", "yaml", "name" or "jsonpath"."""

    kind: str = ""
    template: jsonpath.Template | None = None

    @property
    def data(self) -> bool:
        """Whether the data is printed (not a table)."""
        return self.kind in DATA_FORMATS


def output_type(tables: Sequence[str]) -> Callable[[str], Output]:
    """The argparse `type` of -o/--output: `tables` (e.g. "wide"), json, yaml, name, or
    jsonpath=TEMPLATE (read here: a bad template is bad usage, one line, exit 2)."""
    kinds = [*tables, "json", "yaml", "name"]

    def parse(text: str) -> Output:
        if text in kinds:
            return Output(text)
        if text.startswith("jsonpath="):
            try:
                return Output("jsonpath", jsonpath.parse(text.removeprefix("jsonpath=")))
            except jsonpath.BadTemplate as exc:
                raise argparse.ArgumentTypeError(f"jsonpath template: {exc}") from None
        raise argparse.ArgumentTypeError(
            f"unknown output format {text!r} (one of {', '.join(kinds)}, jsonpath=TEMPLATE)"
        )

    return parse


def add_output_flag(parser: argparse.ArgumentParser, tables: Sequence[str], note: str = "") -> None:
    """-o/--output FORMAT: `tables` (e.g. "wide"), json, yaml, name or jsonpath=TEMPLATE."""
    kinds = ", ".join([*tables, "json", "yaml", "name"])
    parser.add_argument(
        "-o",
        "--output",
        type=output_type(tables),
        default=Output(),
        metavar="FORMAT",
        help=f"{kinds} or jsonpath=TEMPLATE (kubectl's){note}",
    )


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, but a string with U+0085 (NEL) is always double-quoted (where it
    is escaped as \\N): PyYAML writes it raw in a single-quoted scalar, and reading that back
    folds it into a space."""

    def choose_scalar_style(self) -> str:
        event = self.event
        if isinstance(event, yaml.ScalarEvent) and "\x85" in event.value:
            return '"'
        style: str = super().choose_scalar_style()
        return style


def _enum_value(dumper: yaml.SafeDumper, value: StrEnum) -> yaml.Node:
    """A string enum (a removal mode, a reason) is its text, as json.dumps writes it."""
    return dumper.represent_str(str(value.value))


_Dumper.add_multi_representer(StrEnum, _enum_value)


def to_yaml(value: Any) -> str:
    """JSON-like data as kubectl prints YAML: block style, keys in their order, any text
    read back as it was (yaml.safe_load)."""
    text: str = yaml.dump(
        value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return text


def emit(data: Any, names: Sequence[str], output: Output, out: TextIO) -> None:
    """`data` as `output` says (json, yaml, jsonpath); `names` (`node/NAME`), a line each, for
    -o name. jsonpath.JsonPathError when the template does not apply to the data."""
    if output.kind == "json":
        out.write(json.dumps(data, indent=2) + "\n")
    elif output.kind == "yaml":
        out.write(to_yaml(data))
    elif output.kind == "name":
        out.write("".join(f"{n}\n" for n in names))
    elif output.kind == "jsonpath":
        assert output.template is not None
        out.write(output.template.render(data))
    else:
        raise ValueError(f"not a data format: {output.kind!r}")
