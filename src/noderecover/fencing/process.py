"""Running a fence program: argv (never a shell), input on stdin, bounded, killed on timeout."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio

MAX_OUTPUT = 2000  # characters of a program's output kept for a message


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    output: str  # stdout and stderr, the last MAX_OUTPUT characters


async def run(argv: Sequence[str], *, stdin: str, env: Mapping[str, str], timeout: float) -> Ran:
    """Run `argv` with `stdin`. Raises TimeoutError (the process is killed) and OSError
    (could not start)."""
    with anyio.fail_after(timeout):
        proc = await anyio.run_process(
            list(argv),
            input=stdin.encode(),
            env=dict(env),
            check=False,
            stderr=subprocess.STDOUT,
        )
    out = proc.stdout.decode(errors="replace") if proc.stdout else ""
    return Ran(proc.returncode, out[-MAX_OUTPUT:].strip())
