"""Build the test control plane from the Go module proxy into a cache folder.

Plain standard library only, so it runs from a source tree without an install::

    PYTHONPATH=src python -m noderecover_testkit build

Layout (``ROOT`` is ``$NODERECOVER_CACHE_DIR`` or ``~/.cache/noderecover``)::

    ROOT/bin/<pin-key>/          etcd kube-apiserver kube-controller-manager kube-scheduler
                                 kubectl kwok kwok-stages.yaml stamp.json
    ROOT/bin/<tool-pin-key>/     helm promtool monitoring-crds.yaml stamp.json (the chart and
                                 alert tests; the CRDs: ServiceMonitor, PrometheusRule)
    ROOT/work/<pin-key>/<part>/  throwaway Go modules (go.mod with the replace directives)
                                 and build logs; never committed

``k8s.io/kubernetes`` cannot be ``go install``ed: its go.mod replaces every staging module
(``k8s.io/api`` ...) with a local path. The throwaway module requires it and replaces each
staging module with the published ``v0.<minor>.<patch>`` version instead. The build is
idempotent: only missing binaries are built, and the stamp file records the pins so a
changed pin (or a stamp from another set of pins) rebuilds everything.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from noderecover.core.nodes import format_time

from . import versions

Log = Callable[[str], None]

STAMP_NAME = "stamp.json"
KWOK_STAGES_NAME = "kwok-stages.yaml"

#: kwok stage files (inside the kwok module) that make up the kubelet simulation:
#: what ``kwokctl`` uses by default with node leases, with real (not scaled) timings.
KWOK_STAGE_FILES: tuple[str, ...] = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

_STAGING_REPLACE = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/")


class BuildError(RuntimeError):
    """A step of the build failed; the message names the log file."""


def _print(msg: str) -> None:
    print(f"[testcluster build] {msg}", flush=True)


def cache_root() -> Path:
    """``$NODERECOVER_CACHE_DIR`` or ``~/.cache/noderecover``."""
    env = os.environ.get("NODERECOVER_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "noderecover"


def bin_dir() -> Path:
    """Folder that holds the binaries for the current pins."""
    return cache_root() / "bin" / versions.pin_key()


def work_dir() -> Path:
    """Folder for the throwaway Go modules and build logs of the current pins."""
    return cache_root() / "work" / versions.pin_key()


def binary_path(name: str) -> Path:
    """Path of one binary (it may not exist yet: see :func:`ensure_built`)."""
    return bin_dir() / name


def _read_stamp(directory: Path) -> dict[str, object] | None:
    try:
        data = json.loads((directory / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stamp_ok(directory: Path, pins: dict[str, str] | None = None) -> bool:
    stamp = _read_stamp(directory)
    want = versions.pins() if pins is None else pins
    return stamp is not None and stamp.get("pins") == want


def missing(directory: Path | None = None) -> list[str]:
    """Names of the artifacts that are not built yet (all of them if the stamp is stale)."""
    d = directory or bin_dir()
    wanted = [*versions.ALL_BINARIES, KWOK_STAGES_NAME]
    if not _stamp_ok(d):
        return wanted
    out = []
    for name in wanted:
        p = d / name
        if not p.is_file() or (name != KWOK_STAGES_NAME and not os.access(p, os.X_OK)):
            out.append(name)
    return out


def is_built() -> bool:
    """True when every binary for the current pins is in the cache."""
    return not missing()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOFLAGS"] = "-trimpath -mod=mod"
    env["GOWORK"] = "off"
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    return env


def _run(args: Sequence[str], cwd: Path, logfile: Path) -> str:
    """Run a go command, appending its output to ``logfile``; return stdout."""
    with logfile.open("a") as log:
        log.write(f"\n$ {' '.join(args)}\n")
        log.flush()
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=_go_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=False,
        )
        log.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text().splitlines()[-30:])
        raise BuildError(f"{' '.join(args)} failed ({proc.returncode}); log {logfile}:\n{tail}")
    return proc.stdout


def _module_dir(module: str, version: str, cwd: Path, logfile: Path) -> Path:
    out = _run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd, logfile)
    info = json.loads(out)
    return Path(info["Dir"])


def _fresh_module(path: Path, name: str, header: str = "") -> None:
    """(Re)write a throwaway go.mod with no requirements yet."""
    path.mkdir(parents=True, exist_ok=True)
    for f in ("go.mod", "go.sum"):
        (path / f).unlink(missing_ok=True)
    (path / "go.mod").write_text(f"module {name}\n\n{header}")


def _install(out: Path, tmp: Path) -> None:
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)


def _build(
    pkg: str,
    out: Path,
    ldflags: str,
    cwd: Path,
    logfile: Path,
    log: Log,
    tags: Sequence[str] = (),
) -> None:
    t0 = time.monotonic()
    log(f"building {out.name} ({pkg}) ...")
    tmp = out.with_name(f".{out.name}.tmp")
    tag_args = ["-tags", ",".join(tags)] if tags else []
    _run(["go", "build", *tag_args, "-ldflags", ldflags, "-o", str(tmp), pkg], cwd, logfile)
    _install(out, tmp)
    log(f"built {out.name} in {time.monotonic() - t0:.0f}s")


def _k8s_go_header(k8s_gomod: str) -> tuple[str, list[str]]:
    """The go/godebug lines of kubernetes' go.mod and its staging module names."""
    header_lines = []
    staging: list[str] = []
    for line in k8s_gomod.splitlines():
        stripped = line.strip()
        if stripped.startswith(("go ", "godebug ")):
            header_lines.append(stripped)
        m = _STAGING_REPLACE.match(line)
        if m and m.group(1) not in staging:
            staging.append(m.group(1))
    return "\n".join(header_lines) + "\n", staging


def _build_k8s(names: list[str], out_dir: Path, log: Log) -> None:
    wd = work_dir() / "kubernetes"
    wd.mkdir(parents=True, exist_ok=True)
    logfile = wd / "build.log"
    v = versions.K8S_VERSION
    sv = versions.staging_version()
    log(f"resolving k8s.io/kubernetes {v} (staging modules {sv}) ...")
    t0 = time.monotonic()
    _fresh_module(wd, "noderecover.local/testcluster/kubernetes")
    kdir = _module_dir("k8s.io/kubernetes", v, wd, logfile)
    header, staging = _k8s_go_header((kdir / "go.mod").read_text())
    if not staging:
        raise BuildError(f"no staging replace directives found in {kdir / 'go.mod'}")
    replaces = "".join(f"replace {m} => {m} {sv}\n" for m in staging)
    _fresh_module(wd, "noderecover.local/testcluster/kubernetes", f"{header}\n{replaces}")
    _run(
        ["go", "get", "-tool", *[f"k8s.io/kubernetes/cmd/{n}@{v}" for n in names]],
        wd,
        logfile,
    )
    log(f"resolved {len(staging)} staging replaces in {time.monotonic() - t0:.0f}s")
    major, minor = versions.k8s_major_minor()
    xs = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        xs += [
            f"-X {pkg}.gitVersion={v}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    ldflags = " ".join(["-s", "-w", *xs])
    for n in names:
        _build(f"k8s.io/kubernetes/cmd/{n}", out_dir / n, ldflags, wd, logfile, log)


def _build_etcd(out_dir: Path, log: Log) -> None:
    wd = work_dir() / "etcd"
    logfile = wd / "build.log"
    v = versions.ETCD_VERSION
    log(f"resolving go.etcd.io/etcd/server/v3 {v} ...")
    _fresh_module(wd, "noderecover.local/testcluster/etcd")
    _run(["go", "get", "-tool", f"go.etcd.io/etcd/server/v3@{v}"], wd, logfile)
    _build("go.etcd.io/etcd/server/v3", out_dir / "etcd", "-s -w", wd, logfile, log)


def _build_kwok(build_binary: bool, out_dir: Path, log: Log) -> None:
    wd = work_dir() / "kwok"
    logfile = wd / "build.log"
    v = versions.KWOK_VERSION
    log(f"resolving sigs.k8s.io/kwok {v} ...")
    _fresh_module(wd, "noderecover.local/testcluster/kwok")
    _run(["go", "get", "-tool", f"sigs.k8s.io/kwok/cmd/kwok@{v}"], wd, logfile)
    if build_binary:
        ldflags = f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={v.removeprefix('v')}"
        _build("sigs.k8s.io/kwok/cmd/kwok", out_dir / "kwok", ldflags, wd, logfile, log)
    kdir = _module_dir("sigs.k8s.io/kwok", v, wd, logfile)
    docs = []
    for rel in KWOK_STAGE_FILES:
        text = (kdir / rel).read_text().strip()
        docs.append(f"# from sigs.k8s.io/kwok@{v}/{rel}\n{text}\n")
    tmp = out_dir / f".{KWOK_STAGES_NAME}.tmp"
    tmp.write_text("---\n".join(docs))
    os.replace(tmp, out_dir / KWOK_STAGES_NAME)


def version_output(name: str, directory: Path | None = None) -> str:
    """What ``<binary> --version`` prints (kubectl: ``version --client``)."""
    exe = str((directory or bin_dir()) / name)
    args = [exe, "version", "--client"] if name == "kubectl" else [exe, "--version"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    return (proc.stdout + proc.stderr).strip()


def expected_version(name: str) -> str:
    """The version string that ``--version`` of ``name`` must contain."""
    if name == "etcd":
        return versions.ETCD_VERSION.removeprefix("v")
    if name == "kwok":
        return versions.KWOK_VERSION.removeprefix("v")
    return versions.K8S_VERSION


def _check_versions(directory: Path, log: Log) -> None:
    for name in versions.ALL_BINARIES:
        out = version_output(name, directory)
        if expected_version(name) not in out:
            raise BuildError(f"{name} reports {out!r}, expected {expected_version(name)}")
        log(f"{name}: {out.splitlines()[0] if out else '?'}")


def _write_stamp(
    directory: Path, go_version: str, *, complete: bool, pins: dict[str, str] | None = None
) -> None:
    stamp = {
        "pins": versions.pins() if pins is None else pins,
        "go": go_version,
        "complete": complete,
        "written_at": format_time(time.time()),
    }
    tmp = directory / f".{STAMP_NAME}.tmp"
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, directory / STAMP_NAME)


def ensure_built(*, force: bool = False, log: Log = _print) -> Path:
    """Build whatever is missing for the current pins; return the binary folder.

    Safe to call concurrently (a file lock serialises builds) and cheap when all is built.
    """
    out_dir = bin_dir()
    if not force and is_built():
        return out_dir
    if shutil.which("go") is None:
        raise BuildError("the Go toolchain (go) is not on PATH")
    with _lock(cache_root() / "work" / f"{versions.pin_key()}.lock"):
        todo = [*versions.ALL_BINARIES, KWOK_STAGES_NAME] if force else missing(out_dir)
        if not todo:
            return out_dir
        t0 = time.monotonic()
        out_dir.mkdir(parents=True, exist_ok=True)
        go_version = subprocess.run(
            ["go", "version"], capture_output=True, text=True, check=True, env=_go_env()
        ).stdout.strip()
        if force or not _stamp_ok(out_dir):
            # Stamp of other pins (or none): whatever is in the folder is not trusted.
            for name in (*versions.ALL_BINARIES, KWOK_STAGES_NAME, STAMP_NAME):
                (out_dir / name).unlink(missing_ok=True)
            _write_stamp(out_dir, go_version, complete=False)
        log(f"pins {versions.pins()} -> {out_dir}")
        log(f"{go_version}; missing: {', '.join(todo)}")
        k8s = [n for n in versions.K8S_COMMANDS if n in todo]
        if k8s:
            _build_k8s(k8s, out_dir, log)
        if "etcd" in todo:
            _build_etcd(out_dir, log)
        if "kwok" in todo or KWOK_STAGES_NAME in todo:
            _build_kwok("kwok" in todo, out_dir, log)
        _check_versions(out_dir, log)
        _write_stamp(out_dir, go_version, complete=True)
        log(f"done in {time.monotonic() - t0:.0f}s")
        return out_dir


# ----------------------------------------------------------------------------- helm, promtool
# Their own folder ROOT/bin/<tool-pin-key>/ (helm promtool stamp.json), so a new tool pin
# never rebuilds the control plane and a new control plane pin never rebuilds the tools.


def tools_bin_dir() -> Path:
    """Folder that holds helm and promtool for the current tool pins."""
    return cache_root() / "bin" / versions.tool_pin_key()


def tools_work_dir() -> Path:
    """Folder for the throwaway Go modules and build logs of the tools."""
    return cache_root() / "work" / versions.tool_pin_key()


MONITORING_CRDS_NAME = "monitoring-crds.yaml"


def _tool_artifacts() -> list[str]:
    return [*versions.TOOL_BINARIES, MONITORING_CRDS_NAME]


def tools_missing(directory: Path | None = None) -> list[str]:
    """Names of the tools (and the CRD file) not built yet (all if the stamp is stale)."""
    d = directory or tools_bin_dir()
    if not _stamp_ok(d, versions.tool_pins()):
        return _tool_artifacts()
    out = []
    for name in _tool_artifacts():
        p = d / name
        if not p.is_file() or (name != MONITORING_CRDS_NAME and not os.access(p, os.X_OK)):
            out.append(name)
    return out


def expected_tool_version(name: str) -> str:
    """The version string that ``helm version`` / ``promtool --version`` must contain."""
    if name == "helm":
        return versions.HELM_VERSION
    if name == "promtool":
        return versions.prometheus_release()
    raise ValueError(f"unknown tool {name!r} (want one of {', '.join(versions.TOOL_BINARIES)})")


def tool_version_output(name: str, directory: Path | None = None) -> str:
    """What the tool prints for its version."""
    exe = str((directory or tools_bin_dir()) / name)
    args = [exe, "version", "--short"] if name == "helm" else [exe, "--version"]
    env = {**os.environ, "HELM_CACHE_HOME": "/nonexistent", "HELM_CONFIG_HOME": "/nonexistent"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, env=env)
    return (proc.stdout + proc.stderr).strip()


HELM_PKG = "helm.sh/helm/v3/cmd/helm"
PROMTOOL_PKG = "github.com/prometheus/prometheus/cmd/promtool"
CONTROLLER_GEN_PKG = "sigs.k8s.io/controller-tools/cmd/controller-gen"
MONITORING_API = "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring"


def _tools_module(log: Log) -> tuple[Path, Path]:
    """One throwaway module for all the tools (so the Kubernetes libraries they share resolve
    to one version and compile once: ~2 CPU minutes less than a module each)."""
    wd = tools_work_dir() / "tools"
    logfile = wd / "build.log"
    t0 = time.monotonic()
    log(
        f"resolving helm {versions.HELM_VERSION}, prometheus {versions.PROMETHEUS_VERSION}, "
        f"controller-tools {versions.CONTROLLER_TOOLS_VERSION}, "
        f"prometheus-operator API {versions.PROMETHEUS_OPERATOR_VERSION} ..."
    )
    _fresh_module(wd, "noderecover.local/tools")
    _run(
        [
            "go",
            "get",
            "-tool",
            f"{HELM_PKG}@{versions.HELM_VERSION}",
            f"{PROMTOOL_PKG}@{versions.PROMETHEUS_VERSION}",
            f"{CONTROLLER_GEN_PKG}@{versions.CONTROLLER_TOOLS_VERSION}",
        ],
        wd,
        logfile,
    )
    _run(["go", "get", f"{MONITORING_API}@{versions.PROMETHEUS_OPERATOR_VERSION}"], wd, logfile)
    log(f"resolved in {time.monotonic() - t0:.0f}s")
    return wd, logfile


def _build_helm(out_dir: Path, wd: Path, logfile: Path, log: Log) -> None:
    # As helm's Makefile: the version, and the Kubernetes version `helm template` and
    # `helm lint` assume without a cluster (the control plane's, not helm's 1.20 default).
    major, minor = versions.k8s_major_minor()
    xs = [f"-X helm.sh/helm/v3/internal/version.version={versions.HELM_VERSION}"]
    xs += ["-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        xs += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    ldflags = " ".join(["-s", "-w", *xs])
    _build(HELM_PKG, out_dir / "helm", ldflags, wd, logfile, log)


def _build_promtool(out_dir: Path, wd: Path, logfile: Path, log: Log) -> None:
    release = versions.prometheus_release()
    ldflags = f"-s -w -X github.com/prometheus/common/version.Version={release}"
    tags = versions.PROMTOOL_TAGS
    _build(PROMTOOL_PKG, out_dir / "promtool", ldflags, wd, logfile, log, tags=tags)


def _generate_monitoring_crds(out_dir: Path, wd: Path, logfile: Path, log: Log) -> None:
    """ServiceMonitor and PrometheusRule CRDs from the pinned Prometheus Operator API types,
    by the pinned controller-gen (as the operator generates its own; descriptions dropped)."""
    t0 = time.monotonic()
    api = MONITORING_API
    cg = wd / "controller-gen"
    _build(CONTROLLER_GEN_PKG, cg, "-s -w", wd, logfile, log)
    gen = wd / "generated"
    shutil.rmtree(gen, ignore_errors=True)
    _run(
        [
            str(cg),
            "crd:crdVersions=v1,maxDescLen=0",
            f"paths={api}/v1",
            f"output:crd:dir={gen}",
        ],
        wd,
        logfile,
    )
    docs = []
    for plural in versions.MONITORING_CRDS:
        f = gen / f"monitoring.coreos.com_{plural}.yaml"
        if not f.is_file():
            raise BuildError(f"controller-gen wrote no {f.name}; log {logfile}")
        text = f.read_text().strip().removeprefix("---").strip()
        docs.append(f"# generated from {api}@{versions.PROMETHEUS_OPERATOR_VERSION}/v1\n{text}\n")
    tmp = out_dir / f".{MONITORING_CRDS_NAME}.tmp"
    tmp.write_text("---\n".join(docs))
    os.replace(tmp, out_dir / MONITORING_CRDS_NAME)
    log(f"generated {MONITORING_CRDS_NAME} in {time.monotonic() - t0:.0f}s")


def ensure_tools_built(*, force: bool = False, log: Log = _print) -> Path:
    """Build helm and promtool if missing for the current tool pins; return their folder."""
    out_dir = tools_bin_dir()
    pins = versions.tool_pins()
    if not force and not tools_missing(out_dir):
        return out_dir
    if shutil.which("go") is None:
        raise BuildError("the Go toolchain (go) is not on PATH")
    with _lock(cache_root() / "work" / f"{versions.tool_pin_key()}.lock"):
        todo = _tool_artifacts() if force else tools_missing(out_dir)
        if not todo:
            return out_dir
        t0 = time.monotonic()
        out_dir.mkdir(parents=True, exist_ok=True)
        go_version = subprocess.run(
            ["go", "version"], capture_output=True, text=True, check=True, env=_go_env()
        ).stdout.strip()
        if force or not _stamp_ok(out_dir, pins):
            for name in (*_tool_artifacts(), STAMP_NAME):
                (out_dir / name).unlink(missing_ok=True)
            _write_stamp(out_dir, go_version, complete=False, pins=pins)
        log(f"tool pins {pins} -> {out_dir}")
        log(f"{go_version}; missing: {', '.join(todo)}")
        wd, logfile = _tools_module(log)
        if "helm" in todo:
            _build_helm(out_dir, wd, logfile, log)
        if "promtool" in todo:
            _build_promtool(out_dir, wd, logfile, log)
        if MONITORING_CRDS_NAME in todo:
            _generate_monitoring_crds(out_dir, wd, logfile, log)
        for name in versions.TOOL_BINARIES:
            out = tool_version_output(name, out_dir)
            if expected_tool_version(name) not in out:
                raise BuildError(f"{name} reports {out!r}, expected {expected_tool_version(name)}")
            log(f"{name}: {out.splitlines()[0] if out else '?'}")
        _write_stamp(out_dir, go_version, complete=True, pins=pins)
        log(f"tools done in {time.monotonic() - t0:.0f}s")
        return out_dir


def tool(name: str) -> Path:
    """Path of the pinned ``helm`` or ``promtool``, built first if missing.

    Raises :class:`BuildError` when it is missing and cannot be built (no Go, a failed
    build): tests that need a tool fail with that message instead of skipping.
    """
    if name not in versions.TOOL_BINARIES:
        raise ValueError(f"unknown tool {name!r} (want one of {', '.join(versions.TOOL_BINARIES)})")
    return ensure_tools_built() / name


def monitoring_crds() -> Path:
    """The ServiceMonitor and PrometheusRule CRDs (one YAML file), generated if missing."""
    return ensure_tools_built() / MONITORING_CRDS_NAME


# -------------------------------------------------------------------------------- actionlint
# Its own folder ROOT/bin/actionlint-<version>/ (actionlint stamp.json): a small module of its
# own, so its dependencies never shift the versions the other tools resolve.

ACTIONLINT_PKG = "github.com/rhysd/actionlint/cmd/actionlint"


def actionlint_bin_dir() -> Path:
    """Folder that holds actionlint for the current pin."""
    return cache_root() / "bin" / versions.actionlint_pin_key()


def _actionlint_pins() -> dict[str, str]:
    return {"actionlint": versions.ACTIONLINT_VERSION}


def actionlint_version_output(directory: Path | None = None) -> str:
    exe = str((directory or actionlint_bin_dir()) / "actionlint")
    proc = subprocess.run(
        [exe, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    return (proc.stdout + proc.stderr).strip()


def ensure_actionlint(*, force: bool = False, log: Log = _print) -> Path:
    """Build actionlint if missing for the current pin; return its path."""
    out_dir = actionlint_bin_dir()
    exe = out_dir / "actionlint"
    pins = _actionlint_pins()
    if not force and _stamp_ok(out_dir, pins) and os.access(exe, os.X_OK):
        return exe
    if shutil.which("go") is None:
        raise BuildError("the Go toolchain (go) is not on PATH")
    with _lock(cache_root() / "work" / f"{versions.actionlint_pin_key()}.lock"):
        if not force and _stamp_ok(out_dir, pins) and os.access(exe, os.X_OK):
            return exe
        out_dir.mkdir(parents=True, exist_ok=True)
        go_version = subprocess.run(
            ["go", "version"], capture_output=True, text=True, check=True, env=_go_env()
        ).stdout.strip()
        _write_stamp(out_dir, go_version, complete=False, pins=pins)
        wd = cache_root() / "work" / versions.actionlint_pin_key()
        logfile = wd / "build.log"
        v = versions.ACTIONLINT_VERSION
        log(f"resolving github.com/rhysd/actionlint {v} ...")
        _fresh_module(wd, "noderecover.local/actionlint")
        _run(["go", "get", "-tool", f"{ACTIONLINT_PKG}@{v}"], wd, logfile)
        ldflags = f"-s -w -X github.com/rhysd/actionlint.version={v}"
        _build(ACTIONLINT_PKG, exe, ldflags, wd, logfile, log)
        out = actionlint_version_output(out_dir)
        if v not in out.splitlines()[0:1]:
            raise BuildError(f"actionlint reports {out!r}, expected {v}")
        _write_stamp(out_dir, go_version, complete=True, pins=pins)
        return exe


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m noderecover_testkit.build [--force]``: the control plane, the tools, then
    actionlint."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        d = ensure_built(force="--force" in args)
        t = ensure_tools_built(force="--force" in args)
        a = ensure_actionlint(force="--force" in args)
    except BuildError as exc:
        _print(f"FAILED: {exc}")
        return 1
    print(d)
    print(t)
    print(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
