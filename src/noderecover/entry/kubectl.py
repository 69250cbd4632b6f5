"""`kubectl noderecover`: what noderecover is doing, from the operator's seat (read-only).

    kubectl noderecover status [-o wide|json|yaml]   nodes in remediation, the leader, breaker
    kubectl noderecover why NODE [-o json|yaml]      one node's decision: conditions, timers, gates
    kubectl noderecover plan [-o wide|json|yaml]     every node's next step

The settings the decisions are computed with are the controller's own: the args and
NODERECOVER_* variables of its Deployment (`-n/--namespace`, `--deployment`), parsed by the
same code as `noderecover run`. When that Deployment cannot be read, noderecover's defaults
are used and a note on stderr says so. Nothing is written.

    kubectl noderecover pause (--for D | --until T) [--policy P] [--reason R]
    kubectl noderecover resume [--policy P]

`pause` and `resume` write: the cluster-wide pause where the controller reads it (core.pauses:
next to its leader Lease - the Deployment's --lease-namespace, else its namespace), or a
policy's spec.paused. `--for D` counts from the API server's clock, not this machine's.

Exit codes (kubectl's): 0 ok, 1 an API error or a node that does not exist, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import anyio

from noderecover import __version__
from noderecover.core.nodes import format_time, parse_time
from noderecover.core.pauses import (
    CLUSTER_PAUSE_NAME,
    MAX_PAUSE_DAYS,
    PauseLocation,
    cluster_pause_location,
    label_error,
    own_namespace,
    pause_data,
    resolve_until,
    subdomain_error,
)
from noderecover.core.policies import GROUP, KIND, POLICIES_PATH, VERSION
from noderecover.entry.cli import Parser
from noderecover.entry.cli import one_line as _one_line
from noderecover.entry.cli import parser as run_parser
from noderecover.entry.config import BadFlag, Config, build_config, parse_duration
from noderecover.entry.plan import NodeReport, Preview, preview

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
WRITE_ATTEMPTS = 3  # the pause ConfigMap changed between our read and our write: read again
PROG = "kubectl noderecover"
CONTAINER = "noderecover"


class _Parser(Parser):
    error_prefix = "error: "  # kubectl's


def _timeout(text: str) -> float:
    """--request-timeout: kubectl's forms (10s, 1m, a bare 10 for seconds), more than 0 (every
    request noderecover makes has a timeout: kubectl's "0 = none" is refused)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0s, not {text!r}")
    return seconds


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """kubectl's convention: these flags go before or after the subcommand."""

    def d(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument("--kubeconfig", default=d(None), help="path to the kubeconfig file")
    p.add_argument("--context", default=d(None), help="the kubeconfig context to use")
    p.add_argument(
        "-n",
        "--namespace",
        default=d("noderecover"),
        help="namespace noderecover runs in (its Deployment and leader Lease)",
    )
    p.add_argument("--deployment", default=d("noderecover"), help="noderecover's Deployment there")
    p.add_argument(
        "--request-timeout",
        type=_timeout,
        default=d(10.0),
        metavar="DURATION",
        help="the longest one API request may take, as kubectl takes it (10s, 1m, 10; default 10s)",
    )


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"kubectl-noderecover {__version__}")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in (
        ("status", "nodes in remediation, the leader and the circuit breaker"),
        ("plan", "every node and the step noderecover would take now"),
    ):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("-o", "--output", choices=("wide", "json", "yaml"), default="")
        _common(sp, top=False)
    why = sub.add_parser(
        "why",
        help="the decision for one node: conditions, timers, the gates that hold it",
        description="The decision for one node: conditions, timers, the gates that hold it.",
    )
    why.add_argument("node")
    why.add_argument("-o", "--output", choices=("json", "yaml"), default="")
    _common(why, top=False)
    pause = sub.add_parser(
        "pause",
        help="stop new cordons, drains and removals until a time (cluster-wide or one policy)",
        description="Pause remediation until a time: the whole controller (the ConfigMap "
        f"{CLUSTER_PAUSE_NAME}), or one NodeRecoveryPolicy (--policy). Recovered nodes are "
        "still restored. A pause always ends by itself: --for or --until is required, at "
        f"most {MAX_PAUSE_DAYS} days ahead.",
    )
    when = pause.add_mutually_exclusive_group(required=True)
    when.add_argument("--for", dest="duration", help="how long, e.g. 30m, 2h")
    when.add_argument("--until", help="until this RFC 3339 time, e.g. 2026-12-02T18:00:00Z")
    pause.add_argument("--reason", default="", help="why (shown in status, plan, Events)")
    pause.add_argument("--policy", help="pause this NodeRecoveryPolicy only")
    _common(pause, top=False)
    resume = sub.add_parser(
        "resume",
        help="end a pause now (cluster-wide or one policy)",
        description="End a pause now: the cluster-wide one, or one policy's (--policy).",
    )
    resume.add_argument("--policy", help="resume this NodeRecoveryPolicy only")
    _common(resume, top=False)
    return p


# ------------------------------------------------------------------------------- settings
def deployment_settings(deployment: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The `noderecover run` args and literal NODERECOVER_* env of a Deployment's container."""
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or []
    chosen = next((c for c in containers if c.get("name") == CONTAINER), None)
    if chosen is None and containers:
        chosen = containers[0]
    if not isinstance(chosen, Mapping):
        return [], {}
    args = [str(a) for a in chosen.get("args") or []]
    if args[:1] == ["run"]:
        args = args[1:]
    env = {
        str(e["name"]): str(e["value"])
        for e in chosen.get("env") or []
        if isinstance(e, Mapping)
        and str(e.get("name", "")).startswith("NODERECOVER_")
        and isinstance(e.get("value"), str)
    }
    return args, env


def settings_from(args: Sequence[str], env: Mapping[str, str], opts: argparse.Namespace) -> Config:
    """The controller's Config from its Deployment's args/env, pointed at our kubeconfig."""
    try:
        ns = run_parser().parse_args(["run", *args])
    except SystemExit:  # argparse refused them (and said why on stderr)
        raise BadFlag("its args are not valid `noderecover run` flags") from None
    cfg = build_config(
        ns,
        environ=env,
        runs_here=False,  # its --fence-command is a program in the image, not on this laptop
        kubeconfig=opts.kubeconfig,
        context=opts.context,
        api_timeout=opts.request_timeout,
        dry_run=True,
        leader_elect=False,
    )
    return cfg


# ------------------------------------------------------------------------------ rendering
def _age(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(max(0.0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        out.write("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for JSON-like data (dicts, lists, scalars): kubectl-style output
    without a YAML dependency. Strings are JSON-quoted when YAML could misread them."""
    pad = "  " * indent
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        lines = []
        for k, v in value.items():
            if isinstance(v, (Mapping, list)) and v:
                lines.append(f"{pad}{_scalar(str(k))}:\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{_scalar(str(k))}: {to_yaml(v, 0)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        lines = []
        for v in value:
            if isinstance(v, Mapping) and v:
                body = to_yaml(v, indent + 1)
                lines.append(f"{pad}- {body.lstrip()}")
            elif isinstance(v, list) and v:
                lines.append(f"{pad}-\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}- {to_yaml(v, 0)}")
        return "\n".join(lines)
    return _scalar(value)


_PLAIN_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"})


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)  # YAML 1.1 floats need a dot (and a signed exponent): 5e-324 -> 5.0e-324
        if "." not in text and "e" in text:
            mantissa, exp = text.split("e")
            text = f"{mantissa}.0e{exp if exp[0] in '+-' else '+' + exp}"
        return text if "." in text or "e" in text else f"{text}.0"
    text = str(v)
    # Plain only when YAML reads it back as this very string: a letter first (no number,
    # date or indicator), safe characters, not a YAML 1.1 boolean or null word.
    plain = (
        bool(text)
        and text[0].isascii()
        and text[0].isalpha()
        and set(text) <= _PLAIN_OK
        and text.lower() not in _YAML_WORDS
    )
    return text if plain else _quoted(text)


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar: printable characters as they are, the rest escaped
    (YAML's \\uXXXX / \\UXXXXXXXX, so characters beyond the BMP survive too)."""
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o <= 0x7E or (0xA0 <= o <= 0xD7FF) or (0xE000 <= o <= 0xFFFD and o != 0xFEFF):
            out.append(ch)
        elif o >= 0x10000:
            out.append(f"\\U{o:08x}")
        else:
            out.append(f"\\u{o:04x}")
    out.append('"')
    return "".join(out)


def _emit(data: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        out.write(to_yaml(data) + "\n")


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def report_dict(r: NodeReport, now: float) -> dict[str, Any]:
    return {
        "node": r.node,
        "ready": r.ready,
        "phase": r.phase,
        "phaseSince": _iso(r.phase_since),
        "unhealthyForSeconds": None if r.unhealthy_for is None else round(r.unhealthy_for, 1),
        "next": r.now,
        "nextInSeconds": None if r.next_in is None else round(r.next_in, 1),
        "blockedReason": r.blocked,
        "why": r.why,
        "excluded": r.excluded,
        "managed": r.managed,
        "policy": r.policy,
        "volumes": list(r.volumes),
        "conditions": [
            {"type": c.type, "status": c.status, "reason": c.reason, "since": _iso(c.since)}
            for c in r.conditions
        ],
    }


def in_remediation(r: NodeReport) -> bool:
    return r.phase not in ("-", "Healthy") or r.now not in ("nothing", "ignore")


# ------------------------------------------------------------------------------ commands
async def _leader(kube: Any, cfg: Config, namespace: str) -> dict[str, Any]:
    from noderecover.kube.client import ApiError, NotFound

    ns = own_namespace(cfg.lease_namespace, namespace)
    path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{cfg.lease_name}"
    try:
        lease = await kube.request("GET", path)
    except NotFound:
        return {"lease": f"{ns}/{cfg.lease_name}", "holder": None, "error": "no such Lease"}
    except ApiError as exc:
        return {"lease": f"{ns}/{cfg.lease_name}", "holder": None, "error": _one_line(str(exc))}
    from noderecover.core.nodes import parse_time

    spec = lease.get("spec") or {}
    renew = parse_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    age = None if renew is None else time.time() - renew
    expired = age is not None and isinstance(duration, int) and age > duration
    return {
        "lease": f"{ns}/{cfg.lease_name}",
        "holder": spec.get("holderIdentity"),
        "renewTime": spec.get("renewTime"),
        "renewedSecondsAgo": None if age is None else round(age, 1),
        "leaseDurationSeconds": duration,
        "expired": expired,
        "transitions": spec.get("leaseTransitions"),
    }


class Failed(Exception):
    """A command that did not do what it was asked: one line on stderr, exit 1."""


def check_names(opts: argparse.Namespace) -> None:
    """BadFlag naming the flag when a name that goes into a URL is not a Kubernetes name
    (checked before any request: a '/' or '..' must never reach a path)."""
    if (why := label_error(opts.namespace)) is not None:
        raise BadFlag(f"--namespace: {why}")
    if (why := subdomain_error(opts.deployment)) is not None:
        raise BadFlag(f"--deployment: {why}")
    policy = getattr(opts, "policy", None)
    if policy is not None and (why := subdomain_error(policy)) is not None:
        raise BadFlag(f"--policy: {why}")


async def controller_settings(
    kube: Any, opts: argparse.Namespace, err: TextIO, consequence: str
) -> Config:
    """The controller's Config from its Deployment; noderecover's defaults (and a note on
    stderr ending with `consequence`) when that cannot be read."""
    from noderecover.kube.client import ApiError, NotFound

    path = f"/apis/apps/v1/namespaces/{opts.namespace}/deployments/{opts.deployment}"
    note = ""
    try:
        args, env = deployment_settings(await kube.request("GET", path))
        return settings_from(args, env, opts)
    except NotFound:
        note = f"deployment {opts.namespace}/{opts.deployment} not found"
    except BadFlag as exc:
        note = f"its settings do not parse ({_one_line(str(exc))})"
    except ApiError as exc:  # 403 and friends: fall back, say so
        note = f"could not read {opts.namespace}/{opts.deployment}: {exc}"
    err.write(f"note: {_one_line(note)}; {consequence}\n")
    return settings_from([], {}, opts)


def pause_location(cfg: Config, opts: argparse.Namespace) -> PauseLocation:
    """Where the controller of `cfg` (its Deployment in --namespace) reads the cluster pause:
    the same rule it applies itself (core.pauses)."""
    try:
        return cluster_pause_location(cfg.lease_namespace, opts.namespace)
    except ValueError as exc:  # the Deployment's --lease-namespace was validated: unreachable
        raise BadFlag(str(exc)) from None


async def _run(opts: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from noderecover.entry.app import load_client
    from noderecover.kube.client import KubeClient, Timeouts

    base = settings_from([], {}, opts)
    kube = KubeClient(
        await load_client(base),
        Timeouts(request=opts.request_timeout),
        # The operator's calls, with the operator's credentials: not the controller's.
        user_agent=f"kubectl-noderecover/{__version__}",
    )
    try:
        return await command(kube, opts, out, err)
    finally:
        await kube.close()


async def command(kube: Any, opts: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One command against the API behind `kube`; its exit code. Whatever fails says so in
    one line on `err` and exits non-zero: 2 bad usage (names, times), 1 the API or a command
    that did not do what it was asked (never "paused" and 0 after a failed write)."""
    from noderecover.kube.client import ApiError

    try:
        check_names(opts)
        if opts.command == "pause":
            pause_request(opts)
        return await _execute(kube, opts, out, err)
    except BadFlag as exc:
        err.write(f"error: {_one_line(str(exc))}\n")
        return EXIT_USAGE
    except (ApiError, Failed) as exc:
        err.write(f"error: {_one_line(str(exc))}\n")
        return EXIT_FAILURE


async def _execute(kube: Any, opts: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if opts.command in ("pause", "resume"):
        if opts.policy is not None:
            return await _pause_policy(kube, opts, out)
        cfg = await controller_settings(
            kube, opts, err, f"the pause goes next to its Lease in {opts.namespace}"
        )
        return await _pause_cluster(kube, opts, pause_location(cfg, opts), out)
    cfg = await controller_settings(kube, opts, err, "decisions use noderecover's defaults")
    p = await preview(kube, cfg, namespace=pause_location(cfg, opts).namespace)
    if opts.command == "plan":
        return _plan(p, opts.output, out)
    if opts.command == "why":
        return _why(p, cfg, opts.node, opts.output, out, err)
    leader = await _leader(kube, cfg, opts.namespace)
    return _status(p, cfg, leader, opts.output, out)


def pause_request(opts: argparse.Namespace) -> tuple[float | None, float | None, str]:
    """(seconds, until, flag) of `--for` / `--until`, parsed (BadFlag: not a duration > 0, not
    an RFC 3339 time). Whether it is in the future and within MAX_PAUSE_DAYS needs the API
    server's time: `pause_until`."""
    if opts.duration is not None:
        try:
            seconds = parse_duration(opts.duration)
        except ValueError as exc:
            raise BadFlag(f"--for: {exc}") from None
        if seconds <= 0:
            raise BadFlag(f"--for: must be longer than 0s, not {opts.duration!r}")
        if seconds > MAX_PAUSE_DAYS * 86400:
            raise BadFlag(f"--for: at most {MAX_PAUSE_DAYS} days ahead")
        return seconds, None, "--for"
    parsed = parse_time(opts.until)
    if parsed is None:
        raise BadFlag(f"--until: not an RFC 3339 time: {opts.until!r}")
    return None, parsed, "--until"


def pause_until(opts: argparse.Namespace, server_now: float) -> float:
    """The end of the pause asked for, `--for` counted from `server_now` (the API server's
    time); BadFlag when it is not a future time within MAX_PAUSE_DAYS (a pause must end by
    itself, and soon enough to be remembered)."""
    seconds, until, flag = pause_request(opts)
    try:
        return resolve_until(seconds, until, server_now, flag)
    except ValueError as exc:
        raise BadFlag(str(exc)) from None


async def server_time(kube: Any, collection: str, probe: dict[str, Any], missing: str) -> float:
    """The API server's clock now: a dry-run create (nothing is stored) answers with the
    creationTimestamp the server set. Seconds resolution, truncated: the upper end of the
    second is returned, so a pause `--for D` is never shorter than D. `missing`: what a 404
    of `collection` means."""
    from noderecover.kube import mutating
    from noderecover.kube.client import ApiError, NotFound

    body = {**probe, "metadata": {"generateName": "noderecover-clock-"}}
    try:
        made = await mutating.send(kube, "POST", collection, query=[("dryRun", "All")], body=body)
    except NotFound:
        raise Failed(missing) from None
    except ApiError as exc:
        raise Failed(
            f"cannot read the API server's clock (a dry-run create in {collection}): {exc}"
        ) from None
    meta = made.get("metadata")
    stamp = parse_time(meta.get("creationTimestamp")) if isinstance(meta, Mapping) else None
    if stamp is None:
        raise Failed(f"cannot read the API server's clock: no creationTimestamp from {collection}")
    return stamp + 1.0


async def _pause_policy(kube: Any, opts: argparse.Namespace, out: TextIO) -> int:
    from noderecover.kube import mutating
    from noderecover.kube.client import MERGE_PATCH, NotFound

    path = f"{POLICIES_PATH}/{opts.policy}"
    if opts.command == "pause":
        probe = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "spec": {}}
        missing = "the NodeRecoveryPolicy CRD is not installed"
        until = pause_until(opts, await server_time(kube, POLICIES_PATH, probe, missing))
        paused: dict[str, Any] | None = {
            "until": format_time(until),
            "reason": opts.reason[:256],
        }
    else:
        paused = None
    try:
        await mutating.send(
            kube, "PATCH", path, body={"spec": {"paused": paused}}, content_type=MERGE_PATCH
        )
    except NotFound:
        raise Failed(f'noderecoverypolicy "{opts.policy}" not found') from None
    if paused is None:
        out.write(f"noderecoverypolicy/{opts.policy} resumed\n")
    else:
        out.write(f"noderecoverypolicy/{opts.policy} paused until {paused['until']}\n")
    return EXIT_OK


async def _pause_cluster(
    kube: Any, opts: argparse.Namespace, loc: PauseLocation, out: TextIO
) -> int:
    """Write (or delete) the cluster pause where the controller reads it. A pause that exists
    is updated in place (resourceVersion-guarded), never deleted and re-created: replacing a
    pause never passes through "no pause". Its own start (`since`, the server's time) caps
    it, not the object's creation."""
    from noderecover.kube import mutating
    from noderecover.kube.client import Conflict, NotFound

    if opts.command == "resume":
        try:
            await mutating.send(kube, "DELETE", loc.path)
        except NotFound:
            out.write(f"not paused (no cluster-wide pause: {loc} does not exist)\n")
            return EXIT_OK
        out.write(f"resumed ({loc} deleted)\n")
        return EXIT_OK
    missing = (
        f"namespace {loc.namespace} not found: noderecover reads its pause there "
        "(-n/--namespace names the namespace noderecover runs in)"
    )
    now = await server_time(
        kube, loc.collection, {"apiVersion": "v1", "kind": "ConfigMap"}, missing
    )
    until = pause_until(opts, now)
    data = pause_data(until, opts.reason, since=now)
    for _ in range(WRITE_ATTEMPTS):
        try:
            cur: dict[str, Any] | None = await kube.request("GET", loc.path)
        except NotFound:
            cur = None
        try:
            if cur is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": loc.name,
                        "namespace": loc.namespace,
                        "labels": {"app.kubernetes.io/name": "noderecover"},
                    },
                    "data": data,
                }
                await mutating.send(kube, "POST", loc.collection, body=body)
            else:  # the same object, its resourceVersion as the precondition
                await mutating.send(kube, "PUT", loc.path, body={**cur, "data": data})
        except Conflict:
            continue  # created or changed since our read: read again
        out.write(f"paused until {data['until']} ({loc})\n")
        return EXIT_OK
    raise Failed(f"{loc} kept changing under us: not paused (try again)")


def _plan(p: Preview, fmt: str, out: TextIO) -> int:
    now = time.time()
    if fmt in ("json", "yaml"):
        _emit({"nodes": [report_dict(r, now) for r in p.reports]}, fmt, out)
        return EXIT_OK
    headers = ["NODE", "READY", "UNHEALTHY FOR", "PHASE", "NOW", "WHY", "POLICY"]
    rows = [[*r.row(), r.policy] for r in p.reports]
    if fmt == "wide":
        headers += ["VOLUMES"]
        rows = [[*row, ",".join(r.volumes) or "-"] for row, r in zip(rows, p.reports, strict=True)]
    _table(headers, rows, out)
    return EXIT_OK


def _status(p: Preview, cfg: Config, leader: Mapping[str, Any], fmt: str, out: TextIO) -> int:
    now = time.time()
    busy = [r for r in p.reports if in_remediation(r)]
    breaker = {
        "open": p.breaker_open,
        "unhealthy": p.unhealthy,
        "managed": p.total,
        "maxUnhealthy": str(cfg.max_unhealthy),
    }
    if fmt in ("json", "yaml"):
        data = {
            "leader": dict(leader),
            "circuitBreaker": breaker,
            "removal": cfg.removal_mode,
            "notes": list(p.notes),
            "nodes": [report_dict(r, now) for r in busy],
        }
        _emit(data, fmt, out)
        return EXIT_OK
    holder = leader.get("holder") or "none"
    ago = leader.get("renewedSecondsAgo")
    state = " (EXPIRED)" if leader.get("expired") else ""
    err = f" ({leader['error']})" if leader.get("error") else ""
    out.write(f"leader: {holder}, renewed {_age(ago)} ago{state}{err}   lease {leader['lease']}\n")
    out.write(
        f"circuit breaker: {'OPEN (no new remediation)' if p.breaker_open else 'closed'} "
        f"({p.unhealthy}/{p.total} unhealthy, limit {cfg.max_unhealthy})   "
        f"removal: {cfg.removal_mode}\n"
    )
    for note in p.notes:  # pauses (with their end), invalid policies
        out.write(f"{note}\n")
    if not busy:
        out.write("no node in remediation\n")
        return EXIT_OK
    headers = ["NODE", "PHASE", "SINCE", "NEXT", "BLOCKED", "WHY"]
    rows = []
    for r in busy:
        since = _age(now - r.phase_since) if r.phase_since is not None else "-"
        nxt = r.now + (f" in {_age(r.next_in)}" if r.next_in is not None else "")
        rows.append([r.node, r.phase, since, nxt, r.blocked or "-", r.why])
    if fmt == "wide":
        headers += ["READY", "UNHEALTHY FOR", "VOLUMES"]
        rows = [
            [*row, r.ready, _age(r.unhealthy_for), ",".join(r.volumes) or "-"]
            for row, r in zip(rows, busy, strict=True)
        ]
    _table(headers, rows, out)
    return EXIT_OK


def _why(p: Preview, cfg: Config, node: str, fmt: str, out: TextIO, err: TextIO) -> int:
    r = next((x for x in p.reports if x.node == node), None)
    if r is None:
        err.write(f'error: node "{_one_line(node)}" not found\n')
        return EXIT_FAILURE
    now = time.time()
    gates = {
        "managed": r.managed,
        "excluded": r.excluded,
        "circuitBreakerOpen": p.breaker_open,
        "unhealthyNodes": f"{p.unhealthy}/{p.total} (limit {cfg.max_unhealthy})",
        "maxConcurrent": cfg.max_concurrent,
        "maxRemovalsPerHour": cfg.max_removals_per_hour,
    }
    timers = {
        "grace": f"{cfg.grace:g}s",
        "healthyDelay": f"{cfg.healthy_delay:g}s",
        "drainTimeout": f"{cfg.drain_timeout:g}s",
        "detachTimeout": f"{cfg.detach_timeout:g}s",
        "removal": cfg.removal_mode,
    }
    if fmt in ("json", "yaml"):
        _emit({**report_dict(r, now), "gates": gates, "settings": timers}, fmt, out)
        return EXIT_OK
    out.write(f"Node {r.node}: {r.phase}")
    if r.phase_since is not None:
        out.write(f" since {_iso(r.phase_since)} ({_age(now - r.phase_since)} ago)")
    out.write("\n")
    out.write(f"Now: {r.now} - {r.why}\n")
    if r.blocked:
        out.write(f"Held by: {r.blocked}\n")
    out.write("Conditions:\n")
    for c in r.conditions:
        since = f" since {_iso(c.since)} ({_age(now - c.since)} ago)" if c.since else ""
        out.write(f"  {c.type}={c.status}{f' ({c.reason})' if c.reason else ''}{since}\n")
    if r.unhealthy_for is not None:
        left = cfg.grace - r.unhealthy_for
        grace = f"{_age(left)} left" if left > 0 else "over"
        out.write(f"Unhealthy for {_age(r.unhealthy_for)}; grace {cfg.grace:g}s: {grace}\n")
    out.write(
        "Gates: "
        + ("managed" if r.managed else "NOT matched by --node-selector")
        + f"; exclusion: {r.excluded or 'none'}"
        + f"; circuit breaker {'OPEN' if p.breaker_open else 'closed'}"
        + f" ({p.unhealthy}/{p.total} unhealthy, limit {cfg.max_unhealthy})"
        + f"; max concurrent {cfg.max_concurrent}; removals/hour {cfg.max_removals_per_hour}\n"
    )
    vols = ", ".join(r.volumes) if r.volumes else "none seen"
    out.write(f"Removal: {cfg.removal_mode} (--removal {cfg.removal}); volumes attached: {vols}\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    from noderecover.base import logs
    from noderecover.kube.client import ApiError

    logs.setup_logging("text", "error")
    try:
        # Checked before any API call: a bad name or time is usage (the times against the
        # API server's clock come later, also as usage).
        check_names(opts)
        if opts.command == "pause":
            pause_request(opts)
        return anyio.run(_run, opts, sys.stdout, sys.stderr, backend="asyncio")
    except BadFlag as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (ApiError, Failed) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
