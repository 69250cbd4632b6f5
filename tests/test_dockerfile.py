"""The Dockerfile as written: its shape, and its install steps run in a clean venv.

The real build (buildah, on a Debian base made by mmdebstrap) and a run of the image against
the test control plane are in tests/e2e/test_image.py. Here, without a builder: the two `RUN`
commands marked `# step: wheels` and `# step: install` are taken from the Dockerfile verbatim
and run with the image paths mapped to a temporary folder. The image holds the runtime package
only: the test control plane (`testkit/`) is neither copied nor sent.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from noderecover_testkit.image import copied_sources

from tests.venvs import ROOT, copy_checkout, new_venv, run, sh

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def steps() -> dict[str, str]:
    text = DOCKERFILE.replace("\\\n", " ")
    found = dict(re.findall(r"# step: (\w+)\nRUN ([^\n]+)", text))
    assert set(found) == {"wheels", "install"}, found
    return found


def test_dockerfile_shape() -> None:
    text = DOCKERFILE
    # A normal default base for users; the test command passes its own (--build-arg BASE=).
    assert re.search(r"^ARG BASE=python:3\.\d+-slim$", text, re.M)
    assert re.findall(r"^FROM (.+)$", text, re.M) == ["${BASE} AS build", "${BASE}"]
    assert re.search(r"^USER \d+:\d+$", text, re.M), "non-root numeric user"
    assert 'ENTRYPOINT ["noderecover", "run"]' in text
    assert "--no-cache-dir" in steps()["install"] and "--no-index" in steps()["install"]
    # The venv is copied whole into the runtime stage, at the same path its scripts name.
    assert "COPY --from=build /opt/noderecover /opt/noderecover" in text
    assert re.search(r"^ENV PATH=/opt/noderecover/bin:\$PATH", text, re.M)
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}" in text
    # The runtime stage carries the ClusterLabs fence agents and ipmitool (fence_ipmilan's
    # tool, which Debian's fence-agents does not pull), without recommends, apt lists removed,
    # installed as root before the image switches to its user. Run inside the built image by
    # tests/e2e/test_image.py.
    runtime = text.split("\nFROM ${BASE}\n", 1)[1].replace("\\\n", " ")
    agents = re.findall(r"^RUN apt-get update .*$", runtime, re.M)
    assert len(agents) == 1, agents
    install = re.search(r"apt-get install -y --no-install-recommends ([^&]+)&&", agents[0])
    assert install and set(install.group(1).split()) == {"fence-agents", "ipmitool"}, agents
    assert "rm -rf /var/lib/apt/lists/*" in agents[0]
    assert runtime.index(agents[0]) < runtime.index("\nUSER ")


def test_image_holds_the_runtime_package_only() -> None:
    assert copied_sources(DOCKERFILE) == ["pyproject.toml", "README.md", "LICENSE", "src"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for folder in ("testkit", "tests", "bench"):
        assert folder in ignored, f"{folder} is sent to the Docker build context"
    assert not (ROOT / "src" / "noderecover_testkit").exists()


def test_the_runtime_extras_are_every_extra_but_test_and_bench(tmp_path: Path) -> None:
    """The wheels step installs pyproject's runtime extras (the fence providers' libraries
    when an extra names them), never the test or bench ones."""
    snippet = re.match(r"extras=\$\((.+?)\)\s+&&", steps()["wheels"])
    assert snippet, steps()["wheels"]
    head = '[project]\nname = "x"\n'
    cases = {
        "[project.optional-dependencies]\ntest = []\nbench = []\n": "",
        "[project.optional-dependencies]\ntest = []\nproviders = []\nbench = []\nb = []\n": (
            "[b,providers]"
        ),
        "": "",
    }
    for extras, want in cases.items():
        (tmp_path / "pyproject.toml").write_text(head + extras)
        out = run(snippet.group(1), tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == want, extras


def test_install_steps_work_as_written(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src", *copied_sources(DOCKERFILE))
    wheels, env_dir = tmp_path / "wheels", tmp_path / "venv"
    new_venv(tmp_path / "host")  # a python3 with pip, as the base image has

    def step(name: str, cwd: Path) -> None:
        cmd = (
            steps()[name].replace("/wheels", str(wheels)).replace("/opt/noderecover", str(env_dir))
        )
        sh(f'PATH="{tmp_path / "host" / "bin"}:$PATH"; {cmd}', cwd)

    step("wheels", src)
    assert any(p.name.startswith("noderecover-") for p in wheels.glob("*.whl"))
    assert any(p.name.startswith("uvloop-") for p in wheels.glob("*.whl"))
    assert not any(p.name.startswith("noderecover_testkit") for p in wheels.glob("*.whl"))
    step("install", tmp_path)
    assert not wheels.exists()  # removed in the same layer
    assert not list(env_dir.glob("lib/python*/site-packages/pip")), "pip stays out of the image"
    out = run([env_dir / "bin" / "noderecover", "--version"], tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "noderecover 0.1.0"
    py = env_dir / "bin" / "python"
    gone = run([py, "-c", "import noderecover_testkit"], tmp_path)
    assert gone.returncode == 1 and "ModuleNotFoundError" in gone.stderr
    assert sys.version_info >= (3, 11)
