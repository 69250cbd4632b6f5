"""Command line: `noderecover run`, `plan`, `agent`, `demo`, `noderecover --version`."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import anyio

from noderecover import __version__
from noderecover.entry.agentconfig import add_agent_flags, build_agent_config
from noderecover.entry.config import BadFlag, add_run_flags, build_config
from noderecover.entry.output import add_output_flag

EXIT_FAILURE = 1
EXIT_USAGE = 2
DEMO_MISSING = (
    "the demo needs the test control plane package: pip install . ./testkit "
    "(from a noderecover source checkout)"
)


def one_line(text: str) -> str:
    """`text` with every character that would break or hide the line (CR, LF, tabs, other
    controls, Unicode line separators) escaped: an error is always exactly one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Parser(argparse.ArgumentParser):
    """argparse with noderecover's answer to bad input: one line naming what is wrong, exit 2
    (argparse's default adds a usage block), the same prefix from a subcommand's parser; and
    a value that starts with "-" and a digit (`--grace -5s`) is a value, answered by its own
    check ("negative duration"), not by "expected one argument"."""

    error_prefix = "noderecover: error: "

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # No option of ours starts with "-" and a digit.
        self._negative_number_matcher = re.compile(r"^-\.?[0-9]")

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.error_prefix}{one_line(message)}\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="noderecover", description=__doc__)
    p.add_argument("--version", action="version", version=f"noderecover {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser(
        "run",
        help="watch nodes and remediate dead ones",
        description="Watch Nodes; cordon, drain and remove the ones that stay unhealthy.",
    )
    add_run_flags(run)
    plan = sub.add_parser(
        "plan",
        help="show what noderecover would do now (read-only)",
        description="Read-only: list nodes and the phase/action noderecover would take now.",
    )
    add_output_flag(plan, ["wide"], "; the data of `kubectl noderecover plan -o ...`")
    add_run_flags(plan, run=False)
    agent = sub.add_parser(
        "agent",
        help="the node agent: fence this node when it is cut off (DaemonSet)",
        description="Check the API server every interval; when cut off from it and from peers "
        "that vouch (or when noderecover marked this node), stop the node through the "
        "watchdog or sysrq.",
    )
    add_agent_flags(agent)
    demo = sub.add_parser(
        "demo",
        help="the StatefulSet takeover, live, on a local real control plane",
        description="Build (once) and start a local control plane with kwok nodes, a Redfish "
        "BMC emulator per node and an attachable CSI volume, run the seed's MySQL StatefulSet "
        "and two noderecover replicas (--fence-provider redfish), kill the node under mysql-0 "
        "and follow it until the database is back: mysql-0 Running on another node with its "
        "volume attached there.",
    )
    demo.add_argument("--grace", default="10s", help="noderecover's --grace (default 10s)")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the cluster up at the end and print its kubeconfig",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo":
        from noderecover.entry.config import parse_duration

        try:
            parse_duration(args.grace)
        except ValueError as exc:
            print(f"noderecover: error: --grace: {one_line(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
        try:
            # The test control plane is a package of its own: not in the runtime install.
            from noderecover_testkit.demo import run_demo
        except ImportError:
            print(f"noderecover: error: demo: {DEMO_MISSING}", file=sys.stderr)
            return EXIT_USAGE
        return run_demo(grace=args.grace, keep=args.keep)
    if args.command == "agent":
        return _agent(args)
    try:
        cfg = build_config(args)
    except BadFlag as exc:
        print(f"noderecover: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    from noderecover.base import logs
    from noderecover.entry import app

    try:
        if args.command == "plan":
            from noderecover.core.jsonpath import JsonPathError
            from noderecover.entry.plan import run_plan
            from noderecover.kube.client import ApiError

            logs.setup_logging(cfg.log_format, "warning")
            try:
                return anyio.run(run_plan, cfg, args.output, backend="asyncio")
            # One read, no retries: an API error ends the preview.
            except (ApiError, JsonPathError) as exc:
                print(f"noderecover: error: plan: {one_line(str(exc))}", file=sys.stderr)
                return EXIT_FAILURE
        logs.setup_logging(cfg.log_format, cfg.log_level)
        return anyio.run(app.run, cfg, backend="asyncio", backend_options={"use_uvloop": True})
    except BadFlag as exc:
        print(f"noderecover: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


# The agent runs on asyncio's own event loop, not uvloop: cut off, it cancels and retries
# connects to reset addresses every check, and uvloop (0.23) aborted the process under that
# (SIGABRT inside the loop's run, no Python traceback: 2 of 26 partitions of one agent under
# load; none in 40 on asyncio's loop). Issue 23's e2e failure - an agent that "stalled"
# without fencing, its log ending at "API server not reachable" - had the same signature. A
# dead agent is a rebooting node, or one that fences nothing; it needs no speed.
AGENT_LOOP: dict[str, object] = {"use_uvloop": False}


def _agent(args: argparse.Namespace) -> int:
    try:
        acfg = build_agent_config(args)
    except BadFlag as exc:
        print(f"noderecover: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    import contextlib
    import faulthandler
    import io
    import signal

    from noderecover.base import logs
    from noderecover.entry.agentapp import run_agent

    # `kill -USR1` prints every thread's stack: a hung agent is a rebooting node, say why;
    # so does a crash (SIGSEGV, SIGABRT...): a dead agent is one too.
    with contextlib.suppress(io.UnsupportedOperation, ValueError):  # stderr without a fd
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        faulthandler.enable(all_threads=True)

    logs.setup_logging(acfg.log_format, acfg.log_level)
    try:
        return anyio.run(run_agent, acfg, backend="asyncio", backend_options=AGENT_LOOP)
    except BadFlag as exc:
        print(f"noderecover: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
