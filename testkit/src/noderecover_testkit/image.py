"""The noderecover image, built from the project's own Dockerfile by a real OCI builder.

Registry base images cannot be pulled on these machines, so the base is made from Debian
packages: ``mmdebstrap`` writes a minimal bookworm rootfs with python3 (pins in versions.py),
imported into buildah's storage as a local base image; ``buildah build`` (chroot isolation,
vfs storage, no daemon) then builds the Dockerfile with ``--build-arg BASE=<that image>``.
Plain standard library only, like build.py::

    PYTHONPATH=src:testkit/src python -m noderecover_testkit image

Layout (``ROOT`` as in build.py)::

    ROOT/image/base-<key>/       rootfs.tar, stamp.json (the Debian packages it got)
    ROOT/image/storage/          buildah's image store (vfs); ROOT/image/run/ its run root
    ROOT/image/image-<key>.json  the built image: name, id, sizes, build time

The base key hashes its inputs (suite, sources, variant, packages); the image key hashes the
base key, the Dockerfile, .dockerignore and every file the Dockerfile copies. A second run
with the same inputs finds both and builds nothing. Older test images are removed (the newest
:data:`KEEP_IMAGES` stay), so the store does not grow with every source change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from . import versions
from .build import BuildError, _lock, cache_root

Log = Callable[[str], None]

#: The checkout that holds the Dockerfile (this file is testkit/src/noderecover_testkit/).
CHECKOUT = Path(__file__).resolve().parents[3]
IMAGE_REPO = "localhost/noderecover"
BASE_REPO = "localhost/noderecover-base"
#: How many test images the store keeps (other worktrees may be using theirs).
KEEP_IMAGES = 3
_JUNK = re.compile(r"(^|/)(__pycache__|[^/]*\.egg-info|\.[a-z_]*cache)(/|$)|\.py[co]$")


def _print(msg: str) -> None:
    print(f"[image build] {msg}", flush=True)


def image_root() -> Path:
    return cache_root() / "image"


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def base_key() -> str:
    """Cache key of the base rootfs: a hash of versions.base_pins()."""
    return _digest(versions.base_pins())


def base_dir() -> Path:
    return image_root() / f"base-{base_key()}"


def base_image() -> str:
    return f"{BASE_REPO}:{base_key()}"


def copied_sources(dockerfile: str) -> list[str]:
    """The build-context paths of every ``COPY`` that is not ``--from`` a stage."""
    return [
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M)
        for src in line.split()[:-1]
    ]


def _context_files(checkout: Path) -> Iterator[Path]:
    dockerfile = (checkout / "Dockerfile").read_text()
    for name in ("Dockerfile", ".dockerignore", *copied_sources(dockerfile)):
        p = checkout / name
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(checkout).as_posix()
                if f.is_file() and not _JUNK.search(rel):
                    yield f
        else:
            yield p


def image_key(checkout: Path = CHECKOUT) -> str:
    """Cache key of the image: the base key and the content of what the build reads."""
    h = hashlib.sha256(base_key().encode())
    for f in _context_files(checkout):
        h.update(f.relative_to(checkout).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def image_name(checkout: Path = CHECKOUT) -> str:
    return f"{IMAGE_REPO}:{image_key(checkout)}"


@dataclass(frozen=True)
class Built:
    """A built image, as its stamp records it."""

    name: str
    id: str
    size: int  # bytes of its files unpacked (apparent sizes, hard links once)
    compressed: int  # bytes, the gzip layers a registry push would send (a pull fetches)
    base_size: int  # bytes, uncompressed, of the base alone
    build_seconds: float
    base: str

    def summary(self) -> str:
        mb = 1e6
        return (
            f"image {self.name}: {self.size / mb:.0f} MB uncompressed, "
            f"{self.compressed / mb:.0f} MB compressed (base {self.base_size / mb:.0f} MB, "
            f"the Dockerfile's layers {(self.size - self.base_size) / mb:.0f} MB); "
            f"built in {self.build_seconds:.0f}s"
        )


# ------------------------------------------------------------------------------------ buildah


def buildah_env() -> dict[str, str]:
    env = dict(os.environ)
    env["BUILDAH_ISOLATION"] = "chroot"
    env["STORAGE_DRIVER"] = "vfs"
    return env


def buildah_argv(*args: str) -> list[str]:
    """``buildah`` on the cache's own store (vfs: no overlay or fuse needed)."""
    root = image_root()
    return [
        "buildah",
        "--root",
        str(root / "storage"),
        "--runroot",
        str(root / "run"),
        "--storage-driver",
        "vfs",
        *args,
    ]


def buildah(*args: str, log_file: Path | None = None, timeout: float = 1800) -> str:
    """Run buildah; return its stdout; raise BuildError with its output when it fails."""
    proc = subprocess.run(
        buildah_argv(*args),
        capture_output=True,
        text=True,
        env=buildah_env(),
        timeout=timeout,
        check=False,
    )
    if log_file is not None:
        with log_file.open("a") as fh:
            fh.write(f"\n$ buildah {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BuildError(f"buildah {' '.join(args[:2])} failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def _images() -> list[dict[str, object]]:
    out = buildah("images", "--json") if (image_root() / "storage").exists() else ""
    data = json.loads(out) if out.strip() else []
    return data if isinstance(data, list) else []


def _names(image: dict[str, object]) -> list[str]:
    names = image.get("names")
    return [str(n) for n in names] if isinstance(names, list) else []


def has_image(name: str) -> bool:
    return any(name in _names(i) for i in _images())


def _measure_rootfs(name: str) -> int:
    """Bytes of the image's files (apparent sizes, hard links once): its unpacked size."""
    ctr = buildah("from", "--pull-never", name).strip()
    try:
        mnt = Path(buildah("mount", ctr).strip())
        seen: set[tuple[int, int]] = set()
        total = 0
        for dirpath, dirnames, filenames in os.walk(mnt):
            for n in (*dirnames, *filenames):
                st = os.lstat(os.path.join(dirpath, n))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return total
    finally:
        buildah("rm", ctr)


def _compressed_bytes(name: str, tmp: Path) -> int:
    """What the layers weigh gzip-compressed, as a registry push sends them."""
    out = tmp / "oci"
    buildah("push", "--quiet", "--format", "oci", name, f"oci:{out}")
    index = json.loads((out / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((out / "blobs" / "sha256" / digest).read_text())
    return sum(int(layer["size"]) for layer in manifest["layers"])


# ----------------------------------------------------------------------------- the host tools


def ensure_host_tools(log: Log = _print) -> None:
    """mmdebstrap and buildah from Debian's packages: installed with apt-get when missing."""
    missing = [p for p in versions.IMAGE_HOST_PACKAGES if shutil.which(p) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BuildError(
            f"{', '.join(missing)} missing: install the Debian packages "
            f"{' '.join(versions.IMAGE_HOST_PACKAGES)} (apt-get, as root)"
        )
    log(f"{', '.join(missing)} missing: apt-get install {' '.join(versions.IMAGE_HOST_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        ["apt-get", "update", "-q"],
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *versions.IMAGE_HOST_PACKAGES,
        ],
    ):
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise BuildError(f"{' '.join(args)} failed ({proc.returncode}):\n{tail}")
    log(f"installed: {host_tool_versions()}")


def host_tool_versions() -> str:
    out = []
    for tool in versions.IMAGE_HOST_PACKAGES:
        proc = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        out.append((proc.stdout or proc.stderr).strip().splitlines()[0])
    return "; ".join(out)


# ---------------------------------------------------------------------------------- the base


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_base(log: Log = _print) -> str:
    """The base rootfs (mmdebstrap) imported as :func:`base_image`; made when missing."""
    d = base_dir()
    stamp = _read_json(d / "stamp.json")
    name = base_image()
    if stamp and stamp.get("pins") == versions.base_pins() and has_image(name):
        return name
    d.mkdir(parents=True, exist_ok=True)
    tar = d / "rootfs.tar"
    if not (stamp and stamp.get("pins") == versions.base_pins() and tar.is_file()):
        t0 = time.monotonic()
        log(
            f"mmdebstrap {versions.DEBIAN_SUITE} (variant {versions.DEBIAN_VARIANT}, "
            f"+{','.join(versions.BASE_PACKAGES)}) -> {tar}"
        )
        tmp = d / "rootfs.tar.tmp"
        listing = d / "packages.txt"  # what the rootfs got, written by a customize hook
        argv = [
            "mmdebstrap",
            f"--variant={versions.DEBIAN_VARIANT}",
            f"--include={','.join(versions.BASE_PACKAGES)}",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            *(f"--dpkgopt=path-exclude=/usr/share/{p}/*" for p in ("doc", "man", "locale", "info")),
            "--customize-hook=chroot \"$1\" dpkg-query -W -f '${Package}=${Version}\\n'"
            f" > {listing}",
            versions.DEBIAN_SUITE,
            str(tmp),
            *versions.DEBIAN_SOURCES,
        ]
        logfile = d / "mmdebstrap.log"
        with logfile.open("w") as fh:
            proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = "\n".join(logfile.read_text().splitlines()[-30:])
            raise BuildError(f"mmdebstrap failed ({proc.returncode}); log {logfile}:\n{tail}")
        os.replace(tmp, tar)
        packages = listing.read_text().split() if listing.is_file() else []
        stamp = {
            "pins": versions.base_pins(),
            "packages": packages,
            "seconds": round(time.monotonic() - t0, 1),
        }
        (d / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
        py = next((p for p in packages if p.startswith("python3.11=")), "?")
        log(f"rootfs: {len(packages)} packages ({py}) in {stamp['seconds']}s")
    log(f"importing {tar.name} as {name}")
    ctr = buildah("from", "scratch").strip()
    try:
        buildah("add", ctr, str(tar), "/")
        buildah("config", "--cmd", '["python3"]', "--env", "LANG=C.UTF-8", ctr)
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ctr,
        )
        buildah("commit", "--quiet", ctr, name)
    finally:
        subprocess.run(buildah_argv("rm", ctr), capture_output=True, env=buildah_env(), check=False)
    return name


# ------------------------------------------------------------------------------------ the image


def _pip_config() -> dict[str, str]:
    """The host pip's global settings that reach the network (``cert``, ``index-url``), from
    its config files (as pip reads them: the later file wins), then its environment."""
    import configparser

    files = [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        Path.home() / ".pip" / "pip.conf",
        Path.home() / ".config" / "pip" / "pip.conf",
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    out: dict[str, str] = {}
    for f in files:
        parser = configparser.ConfigParser()
        try:
            parser.read(f)
        except (configparser.Error, UnicodeDecodeError):
            continue
        for key in ("cert", "index-url"):
            if parser.has_option("global", key):
                out[key] = parser.get("global", key)
    for key, env in (("cert", "PIP_CERT"), ("index-url", "PIP_INDEX_URL")):
        if os.environ.get(env):
            out[key] = os.environ[env]
    return out


def _host_network_settings(tmp: Path) -> list[str]:
    """Volumes lending the RUN steps the host's pip settings (a CA bundle, an index), when the
    host has any: its network may need them (these machines reach PyPI through a proxy whose
    CA only the host's bundle holds). Bind mounts: nothing of them is stored in the image."""
    settings = _pip_config()
    cert, index = settings.get("cert"), settings.get("index-url")
    if cert is None and index is None:
        return []
    conf = ["[global]"]
    args: list[str] = []
    if cert is not None and Path(cert).is_file():
        inside = "/etc/ssl/certs/ca-certificates.crt"
        args += ["--volume", f"{Path(cert).resolve()}:{inside}:ro"]
        conf.append(f"cert = {inside}")
    if index is not None:
        conf.append(f"index-url = {index}")
    (tmp / "pip.conf").write_text("\n".join(conf) + "\n")
    return [*args, "--volume", f"{tmp / 'pip.conf'}:/etc/pip.conf:ro"]


def stamp_path(key: str) -> Path:
    return image_root() / f"image-{key}.json"


def built(checkout: Path = CHECKOUT) -> Built | None:
    """The image of this checkout, if it is in the store."""
    key = image_key(checkout)
    stamp = _read_json(stamp_path(key))
    if stamp is None:
        return None
    try:
        b = Built(**stamp)  # type: ignore[arg-type]
    except TypeError:
        return None
    return b if has_image(b.name) else None


def ensure_image(checkout: Path = CHECKOUT, log: Log = _print) -> Built:
    """Build the image of ``checkout`` if the store lacks it; return it."""
    if shutil.which("buildah") is not None and (b := built(checkout)) is not None:
        return b
    ensure_host_tools(log)
    image_root().mkdir(parents=True, exist_ok=True)
    with _lock(image_root() / "build.lock"):
        if (b := built(checkout)) is not None:
            return b
        base = ensure_base(log)
        name = image_name(checkout)
        key = image_key(checkout)
        log(f"buildah build {checkout} --build-arg BASE={base} -t {name}")
        t0 = time.monotonic()
        logfile = image_root() / f"image-{key}.log"
        logfile.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="noderecover-image-") as tmp:
            buildah(
                "build",
                "--isolation",
                "chroot",
                "--layers=false",
                "--pull-never",
                "--build-arg",
                f"BASE={base}",
                *_host_network_settings(Path(tmp)),
                "--tag",
                name,
                str(checkout),
                log_file=logfile,
            )
            seconds = time.monotonic() - t0
            b = Built(
                name=name,
                id=buildah(
                    "inspect", "--type", "image", "--format", "{{.FromImageID}}", name
                ).strip(),
                size=_measure_rootfs(name),
                compressed=_compressed_bytes(name, Path(tmp)),
                base_size=_measure_rootfs(base),
                build_seconds=round(seconds, 1),
                base=base,
            )
        stamp_path(key).write_text(json.dumps(asdict(b), indent=2) + "\n")
        _prune(keep=name)
        return b


def _prune(keep: str) -> None:
    """Remove all but the newest KEEP_IMAGES test images (never ``keep``); unused ones only."""
    ours = [i for i in _images() if any(n.startswith(f"{IMAGE_REPO}:") for n in _names(i))]
    ours.sort(key=lambda i: str(i.get("createdatraw", "")), reverse=True)
    for i in ours[KEEP_IMAGES:]:
        names = _names(i)
        if keep in names:
            continue
        subprocess.run(
            buildah_argv("rmi", str(i["id"])), capture_output=True, env=buildah_env(), check=False
        )
        for n in names:
            stamp = stamp_path(n.rsplit(":", 1)[1])
            stamp.unlink(missing_ok=True)
            stamp.with_suffix(".log").unlink(missing_ok=True)


# ------------------------------------------------------------------------------ running it


def config(name: str) -> dict[str, object]:
    """The image's OCI config (User, Entrypoint, Env, ...)."""
    info = json.loads(buildah("inspect", "--type", "image", name))
    cfg = info.get("OCIv1", {}).get("config", {})
    return cfg if isinstance(cfg, dict) else {}


def run_argv(
    container: str,
    user: str,
    volumes: Sequence[tuple[Path, str]],
    env: dict[str, str],
    command: Sequence[str],
) -> list[str]:
    """``buildah run`` of ``command`` in ``container`` on the host's network (the test API
    server listens on 127.0.0.1), as ``user``, with ``volumes`` (host path, container path)
    mounted read-only."""
    args = ["run", "--network", "host", "--user", user]
    for host, inside in volumes:
        args += ["--volume", f"{host}:{inside}:ro"]
    for k, v in env.items():
        args += ["--env", f"{k}={v}"]
    return buildah_argv(*args, container, "--", *command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m noderecover_testkit image``: build the image if missing; print its size."""
    del argv
    try:
        b = ensure_image()
    except BuildError as exc:
        _print(f"FAILED: {exc}")
        return 1
    _print(b.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
