"""`kubectl noderecover`: what noderecover is doing and would do (status, why, plan: they
only read), and pausing it (pause, resume: they write).

    kubectl noderecover status [-o FORMAT]    nodes in remediation, the leader, the breaker
    kubectl noderecover why NODE [-o FORMAT]  one node's decision: conditions, timers, gates
    kubectl noderecover plan [-o FORMAT]      every node's next step

FORMAT: kubectl's wide (status, plan), json, yaml, name (`node/NAME` a line) or
jsonpath=TEMPLATE (core.jsonpath: the subset of kubectl's templates it reads).

The settings the decisions are computed with are the controller's own: the args and
NODERECOVER_* variables of its Deployment (`-n/--namespace`, `--deployment`), parsed by the
same code as `noderecover run`. When that Deployment cannot be read, noderecover's defaults
are used and a note on stderr says so. status, why and plan write nothing.

    kubectl noderecover pause (--for D | --until T) [--policy P] [--reason R]
    kubectl noderecover resume [--policy P]

`pause` and `resume` write: the cluster-wide pause where the controller reads it (core.pauses:
next to its leader Lease - the Deployment's --lease-namespace, else its namespace), or a
policy's spec.paused. `--for D` counts from the API server's clock, not this machine's.

Exit codes (kubectl's): 0 ok, 1 an API error or a node that does not exist, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import anyio

from noderecover import __version__
from noderecover.core.display import format_age, table
from noderecover.core.durations import format_duration
from noderecover.core.jsonpath import JsonPathError
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
from noderecover.entry.output import Output, add_output_flag, emit
from noderecover.entry.plan import (
    Preview,
    agent_line,
    breaker_dict,
    breaker_line,
    in_remediation,
    node_names,
    preview,
    proof_column,
    report_dict,
    write_plan,
)

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
    p = _Parser(prog=PROG, description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--version", action="version", version=f"kubectl-noderecover {__version__}")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in (
        ("status", "nodes in remediation, the leader and the circuit breaker (reads only)"),
        ("plan", "every node and the step noderecover would take now (reads only)"),
    ):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_output_flag(sp, ["wide"])
        _common(sp, top=False)
    why = sub.add_parser(
        "why",
        help="the decision for one node: conditions, timers, the gates that hold it (reads only)",
        description="The decision for one node: conditions, timers, the gates that hold it.",
    )
    why.add_argument("node")
    add_output_flag(why, [])
    _common(why, top=False)
    pause = sub.add_parser(
        "pause",
        help="write a pause: no new cordons, drains or removals until a time (cluster-wide or "
        "one policy)",
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
        help="end a pause now: delete it, or clear a policy's (writes)",
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
    except (ApiError, Failed, JsonPathError) as exc:
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
        return _plan(p, cfg, opts.output, out)
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


def _plan(p: Preview, cfg: Config, output: Output, out: TextIO) -> int:
    write_plan(p, cfg, output, out)
    return EXIT_OK


def _status(p: Preview, cfg: Config, leader: Mapping[str, Any], output: Output, out: TextIO) -> int:
    now = time.time()
    busy = [r for r in p.reports if in_remediation(r)]
    if output.data:
        data = {
            "leader": dict(leader),
            "circuitBreaker": breaker_dict(p, cfg),
            "removal": cfg.removal_mode,
            "notes": list(p.notes),
            "nodes": [report_dict(r) for r in busy],
        }
        emit(data, node_names(busy), output, out)
        return EXIT_OK
    holder = leader.get("holder") or "none"
    ago = leader.get("renewedSecondsAgo")
    state = " (EXPIRED)" if leader.get("expired") else ""
    err = f" ({leader['error']})" if leader.get("error") else ""
    out.write(
        f"leader: {holder}, renewed {format_age(ago)} ago{state}{err}   lease {leader['lease']}\n"
    )
    out.write(f"{breaker_line(p, cfg)}   removal: {cfg.removal_mode}\n")
    for note in p.notes:  # pauses (with their end), invalid policies
        out.write(f"{note}\n")
    if not busy:
        out.write("no node in remediation\n")
        return EXIT_OK
    headers = ["NODE", "PHASE", "SINCE", "NEXT", "BLOCKED", "AGENT", "WHY"]
    rows = []
    for r in busy:
        since = format_age(now - r.phase_since) if r.phase_since is not None else "-"
        nxt = r.now + (f" in {format_age(r.next_in)}" if r.next_in is not None else "")
        rows.append([r.node, r.phase, since, nxt, r.blocked or "-", r.agent, r.why])
    if output.kind == "wide":
        headers += ["READY", "UNHEALTHY FOR", "VOLUMES", "PROOF"]
        rows = [
            [
                *row,
                r.ready,
                format_age(r.unhealthy_for),
                ",".join(r.volumes) or "-",
                proof_column(r),
            ]
            for row, r in zip(rows, busy, strict=True)
        ]
    out.write(table(headers, rows))
    return EXIT_OK


def _why(p: Preview, cfg: Config, node: str, output: Output, out: TextIO, err: TextIO) -> int:
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
        "grace": format_duration(cfg.grace),
        "healthyDelay": format_duration(cfg.healthy_delay),
        "drainTimeout": format_duration(cfg.drain_timeout),
        "detachTimeout": format_duration(cfg.detach_timeout),
        "removal": cfg.removal_mode,
    }
    if output.data:
        data = {**report_dict(r), "gates": gates, "settings": timers}
        emit(data, node_names([r]), output, out)
        return EXIT_OK
    out.write(f"Node {r.node}: {r.phase}")
    if r.phase_since is not None:
        out.write(f" since {format_time(r.phase_since)} ({format_age(now - r.phase_since)} ago)")
    out.write("\n")
    out.write(f"Now: {r.now} - {r.why}\n")
    if r.blocked:
        out.write(f"Held by: {r.blocked}\n")
    out.write("Conditions:\n")
    for c in r.conditions:
        since = (
            f" since {format_time(c.since)} ({format_age(now - c.since)} ago)" if c.since else ""
        )
        out.write(f"  {c.type}={c.status}{f' ({c.reason})' if c.reason else ''}{since}\n")
    if r.unhealthy_for is not None:
        left = cfg.grace - r.unhealthy_for
        grace = f"{format_age(left)} left" if left > 0 else "over"
        unhealthy_for = format_age(r.unhealthy_for)
        out.write(f"Unhealthy for {unhealthy_for}; grace {format_duration(cfg.grace)}: {grace}\n")
        if cfg.watch_node_leases and cfg.grace_from_heartbeat and r.ready == "Unknown":
            out.write(
                "  (the controller counts a silent node's grace from its last heartbeat it saw, "
                "up to node-monitor-grace earlier; this preview counts from the Ready transition)\n"
            )
    out.write(
        "Gates: "
        + ("managed" if r.managed else "NOT matched by --node-selector")
        + f"; exclusion: {r.excluded or 'none'}"
        + f"; circuit breaker {'OPEN' if p.breaker_open else 'closed'}"
        + f" ({p.unhealthy}/{p.total} unhealthy, limit {cfg.max_unhealthy})"
        + f"; max concurrent {cfg.max_concurrent}; removals/hour {cfg.max_removals_per_hour}\n"
    )
    vols = ", ".join(r.volumes) if r.volumes else "none seen"
    removal = r.removal or cfg.removal_mode
    out.write(
        f"Removal: {removal} (--removal {cfg.removal}); proof the node is off: {r.proof}; "
        f"volumes attached: {vols}\n"
    )
    if r.outlook is not None:
        out.write(f"Proof it will get: {r.outlook}\n")
    out.write(f"Agent: {agent_line(r)}\n")
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
    except (ApiError, Failed, JsonPathError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
