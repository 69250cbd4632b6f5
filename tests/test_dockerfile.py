"""No Docker engine runs here: check the Dockerfile's install steps as written, in a clean venv.

The two `RUN` commands marked `# step: wheels` and `# step: install` are taken from the
Dockerfile verbatim and run with the image paths mapped to a temporary folder. The image holds
the runtime package only: the test control plane (`testkit/`) is neither copied nor sent.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.venvs import ROOT, copy_checkout, new_venv, run, sh


def steps() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = dict(re.findall(r"# step: (\w+)\nRUN ([^\n]+)", text))
    assert set(found) == {"wheels", "install"}, found
    return found


def copied() -> list[str]:
    """The sources of every COPY from the build context."""
    text = (ROOT / "Dockerfile").read_text()
    return [
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
        for src in line.split()[:-1]
    ]


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") == 2 and "AS build" in text
    assert re.search(r"^USER \d+:\d+$", text, re.M), "non-root numeric user"
    assert 'ENTRYPOINT ["noderecover", "run"]' in text
    assert "--no-cache-dir" in steps()["install"] and "--no-index" in steps()["install"]
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}" in text


def test_image_holds_the_runtime_package_only() -> None:
    assert copied() == ["pyproject.toml", "README.md", "src"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for folder in ("testkit", "tests", "bench"):
        assert folder in ignored, f"{folder} is sent to the Docker build context"
    assert not (ROOT / "src" / "noderecover_testkit").exists()


def test_install_steps_work_as_written(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src", *copied())
    wheels, env_dir = tmp_path / "wheels", tmp_path / "venv"
    py = new_venv(env_dir)

    def step(name: str, cwd: Path) -> None:
        cmd = steps()[name]
        sh(cmd.replace("/wheels", str(wheels)).replace("python -m pip", f"{py} -m pip"), cwd)

    step("wheels", src)
    assert any(p.name.startswith("noderecover-") for p in wheels.glob("*.whl"))
    assert any(p.name.startswith("uvloop-") for p in wheels.glob("*.whl"))
    assert not any(p.name.startswith("noderecover_testkit") for p in wheels.glob("*.whl"))
    step("install", tmp_path)
    assert not wheels.exists()  # removed in the same layer
    out = run([env_dir / "bin" / "noderecover", "--version"], tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "noderecover 0.1.0"
    gone = run([py, "-c", "import noderecover_testkit"], tmp_path)
    assert gone.returncode == 1 and "ModuleNotFoundError" in gone.stderr
    assert sys.version_info >= (3, 11)
