"""Clean virtualenvs for install tests: copy the parts of the checkout an install reads, run
shell lines as written in the Dockerfile or the README, ask the installed interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*_cache")


def copy_checkout(dst: Path, *names: str) -> Path:
    """Copy ``names`` (files or folders of the checkout) to ``dst``; symlinks stay symlinks, so
    a relative one resolves only when its target is copied too."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, symlinks=True, ignore=_JUNK)
        else:
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst / name)
    return dst


def new_venv(path: Path) -> Path:
    """A fresh virtualenv with pip; returns its python."""
    venv.create(path, with_pip=True)
    return path / "bin" / "python"


def run(
    argv: str | list[str | Path], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a list, or a shell line) in ``cwd`` where ``python3`` is this interpreter
    and nothing of this checkout is on the import path; the caller checks the exit code."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # only what the install put into the venv may be imported
    shell = isinstance(argv, str)
    return subprocess.run(
        argv if isinstance(argv, str) else [str(a) for a in argv],
        shell=shell,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sh(cmd: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the shell line ``cmd`` as :func:`run` does; fail with its output unless it exits 0."""
    proc = run(cmd, cwd, timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc
