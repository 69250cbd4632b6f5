"""No Docker engine runs here: check the Dockerfile's install steps as written, in a clean venv.

The two `RUN` commands marked `# step: wheels` and `# step: install` are taken from the
Dockerfile verbatim and run with the image paths mapped to a temporary folder.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def steps() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = dict(re.findall(r"# step: (\w+)\nRUN ([^\n]+)", text))
    assert set(found) == {"wheels", "install"}, found
    return found


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") == 2 and "AS build" in text
    assert re.search(r"^USER \d+:\d+$", text, re.M), "non-root numeric user"
    assert 'ENTRYPOINT ["noderecover", "run"]' in text
    assert "--no-cache-dir" in steps()["install"] and "--no-index" in steps()["install"]
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}" in text


def test_install_steps_work_as_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__"))
    wheels, env_dir = tmp_path / "wheels", tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"

    def run(cmd: str, cwd: Path) -> None:
        cmd = cmd.replace("/wheels", str(wheels)).replace("python -m pip", f"{py} -m pip")
        proc = subprocess.run(
            cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=900, check=False
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    run(steps()["wheels"], src)
    assert any(p.name.startswith("noderecover-") for p in wheels.glob("*.whl"))
    assert any(p.name.startswith("uvloop-") for p in wheels.glob("*.whl"))
    run(steps()["install"], tmp_path)
    assert not wheels.exists()  # removed in the same layer
    out = subprocess.run(
        [env_dir / "bin" / "noderecover", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "noderecover 0.1.0"
    assert sys.version_info >= (3, 11)
