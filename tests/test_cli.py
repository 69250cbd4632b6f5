"""The command line end to end, in-process: every subcommand's --help, and start-up errors found
after the flags parse (the HTTP bind, the identity, the kubeconfig's server and credential
plugin), each one line `noderecover: error: ...` naming its flag or variable, exit 2."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noderecover.entry.cli import main, parser

RUNNING_PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def subcommands(
    p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every command path of the parser (`()` is the top level), discovered, not listed."""
    yield prefix
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*prefix, name))


def test_the_discovery_finds_the_subcommands() -> None:
    found = set(subcommands(parser()))
    assert {(), ("run",), ("plan",), ("demo",)} <= found


@pytest.mark.parametrize("command", list(subcommands(parser())), ids=" ".join)
def test_every_subcommand_help_works(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert out.startswith("usage: noderecover") and err == ""
    if command in {("run",), ("plan",)}:
        # The help shows literal percent signs (argparse %-formats help strings).
        assert "(count or %)" in out and "(default: 40%)" in out


@pytest.mark.parametrize(
    "argv",
    [["run", "--grace"], ["plan", "--graze=5s"], ["run", "extra"], ["bogus"], [], ["run", "a\nb"]],
)
def test_parser_errors_are_one_line_prefixed_noderecover_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("noderecover: error: "), err


# ----------------------------------------------------------------------- in-process start-up
@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """main() as a process would run it, without leaking into the other tests: logging and
    the gc tuning restored, no in-cluster or POD_NAME environment of the machine running us."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    threshold = gc.get_threshold()
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAME", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    gc.unfreeze()
    gc.set_threshold(*threshold)


def kubeconfig(tmp: Path, server: str = "https://127.0.0.1:1", user: str = "{token: t}") -> str:
    path = tmp / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: u, user: {user}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    return str(path)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err.splitlines()


def assert_one_line(code: int, err: list[str], *words: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("noderecover: error: "), err
    for w in words:
        assert w in err[0], err


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.usefixtures("isolated")
def test_http_bind_port_in_use_is_one_line(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    bind = f"127.0.0.1:{busy_port}"
    code, err = run_main(["run", "--kubeconfig", kubeconfig(tmp_path), "--http-bind", bind], capsys)
    assert_one_line(code, err, f"--http-bind: cannot bind {bind}", "in use")


@pytest.mark.usefixtures("isolated")
def test_http_bind_in_use_named_by_its_variable(
    tmp_path: Path,
    busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NODERECOVER_HTTP_BIND", f"127.0.0.1:{busy_port}")
    code, err = run_main(["run", "--kubeconfig", kubeconfig(tmp_path)], capsys)
    assert_one_line(code, err, "NODERECOVER_HTTP_BIND: cannot bind", "in use")


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    "host",
    [
        "999.1.1.1",  # not an address at all
        "no-such-host.invalid",  # a name that does not resolve (RFC 6761: never does)
        "203.0.113.7",  # TEST-NET-3: an address, but not one of this host's
    ],
)
def test_http_bind_address_not_on_this_host_is_one_line(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--kubeconfig", kubeconfig(tmp_path), "--http-bind", f"{host}:0"]
    code, err = run_main(argv, capsys)
    assert_one_line(code, err, f"--http-bind: cannot bind {host}:0: ")


def test_the_docs_two_replica_example_gives_each_its_own_bind() -> None:
    lines = [
        line
        for line in RUNNING_PAGE.read_text().splitlines()
        if line.startswith("noderecover run") and "--leader-elect" in line
    ]
    assert len(lines) >= 2, "the two-local-replicas example of docs/configuration.md"
    binds = [re.search(r"--http-bind[ =](\S+)", line) for line in lines]
    assert all(binds), lines
    assert len({b.group(1) for b in binds if b}) == len(lines), lines


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    "pod_name", ["a\r\nX-Injected: 1", "a\nb", "tab\there", "nul\x00", "sp ace", "p\u00f6d", "\x7f"]
)
def test_pod_name_a_header_cannot_carry_is_one_line(
    pod_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "\x00" in pod_name:  # the environment cannot hold a NUL: patch what reads it
        monkeypatch.setattr("noderecover.entry.app.default_identity", lambda: pod_name)
        monkeypatch.setenv("POD_NAME", "x")
    else:
        monkeypatch.setenv("POD_NAME", pod_name)
    argv = ["run", "--kubeconfig", kubeconfig(tmp_path), "--http-bind", "127.0.0.1:0"]
    code, err = run_main(argv, capsys)
    assert_one_line(code, err, "POD_NAME: identity", "header cannot carry")


@pytest.mark.usefixtures("isolated")
def test_pod_name_too_long_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POD_NAME", "p" * 254)
    argv = ["run", "--kubeconfig", kubeconfig(tmp_path), "--http-bind", "127.0.0.1:0"]
    code, err = run_main(argv, capsys)
    assert_one_line(code, err, "POD_NAME: identity is longer than 253")


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    "server",
    [
        "not a url",
        "localhost:6443",
        "https://:443",
        "https://host:abc",
        "ftp://host",
        "https://a b",
    ],
)
def test_kubeconfig_server_that_is_not_a_url_is_one_line(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kubeconfig(tmp_path, server=server)
    for argv in (["run", "--http-bind", "127.0.0.1:0"], ["plan"]):
        code, err = run_main([*argv, "--kubeconfig", path], capsys)
        assert_one_line(code, err, f"--kubeconfig: {path}: cluster server", "not an http(s) URL")


@pytest.mark.usefixtures("isolated")
def test_kubeconfig_from_the_kubeconfig_variable_is_named_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", kubeconfig(tmp_path, server="nowhere"))
    code, err = run_main(["run", "--http-bind", "127.0.0.1:0"], capsys)
    assert_one_line(code, err, "KUBECONFIG: ", "not an http(s) URL")


@pytest.mark.usefixtures("isolated")
def test_in_cluster_config_that_cannot_load_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In a "pod" whose service account token is not mounted (automountServiceAccountToken off).
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(
        "kubernetes_asyncio.config.incluster_config.SERVICE_TOKEN_FILENAME", "/nonexistent/token"
    )
    code, err = run_main(["run", "--http-bind", "127.0.0.1:0"], capsys)
    assert_one_line(code, err, "in-cluster config")


@pytest.mark.usefixtures("isolated")
def test_missing_exec_credential_plugin_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = "{exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: /nonexistent/auth}}"
    path = kubeconfig(tmp_path, user=user)
    code, err = run_main(["run", "--kubeconfig", path, "--http-bind", "127.0.0.1:0"], capsys)
    assert_one_line(code, err, f"--kubeconfig: {path}: exec credential plugin not found")


@pytest.mark.usefixtures("isolated")
def test_failing_exec_credential_plugin_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = "{exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: /bin/false}}"
    path = kubeconfig(tmp_path, user=user)
    code, err = run_main(["run", "--kubeconfig", path, "--http-bind", "127.0.0.1:0"], capsys)
    assert_one_line(code, err, f"--kubeconfig: {path}: ")


# ------------------------------------------------------------------------------- a little fuzz
def run_flag_names() -> list[str]:
    run = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(
        o
        for a in run.choices["run"]._actions
        for o in a.option_strings
        if o.startswith("--") and o != "--help"
    )


FLAGS = run_flag_names()
NASTY = [
    "",
    " ",
    "-",
    "--",
    "\n",
    "a\r\nb",
    "\x7f",
    "\u2028",
    "\uff15s",
    "\u0663",
    "\u00b2",
    "1_0",
    "nan",
    "-inf",
    "1e999",
    "%",
    "%(prog)s",
    "A/B/C=x",
    "a in (b",
    "))((",
    "[::1",
    "999.1.1.1:1",
    ":99999",
    "'unterminated",
    "\udcff",  # a byte that was not UTF-8 in the real argv (surrogateescape)
    "x" * 300,
]
values = st.one_of(st.sampled_from(NASTY), st.text(max_size=20))
env_values = values.map(lambda v: v.replace("\x00", "")).filter(
    lambda v: not any(0xD800 <= ord(c) <= 0xDFFF for c in v)  # the environment is bytes
)


@st.composite
def bad_invocations(draw: st.DrawFn) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, what must stop it): random flags and variables with random values,
    plus one certain start-up error at the end of the line, so that an invocation whose
    flags all pass still exits 2 before it could reach a network."""
    command = draw(st.sampled_from(["run", "plan"]))
    argv = [command]
    for flag in draw(st.lists(st.sampled_from(FLAGS), max_size=4)):
        if flag.startswith("--no-") or flag in BOOLEAN_FLAGS:
            argv.append(flag)
        else:
            argv.append(f"{flag}={draw(values)}")
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(st.sampled_from(["--graze", "extra", "-x", "--grace", "=5"])))
    env = {
        env_name(flag): draw(env_values)
        for flag in draw(st.lists(st.sampled_from(FLAGS), max_size=3))
        if not flag.startswith("--no-")
    }
    stop = draw(st.sampled_from(["not-a-url", "exec", "garbage", "missing", "pod-name"]))
    if command == "plan" and stop == "pod-name":
        stop = "not-a-url"  # plan has no identity
    return argv, env, stop


def env_name(flag: str) -> str:
    return "NODERECOVER_" + flag.removeprefix("--").replace("-", "_").upper()


BOOLEAN_FLAGS = {o.replace("--no-", "--") for o in FLAGS if o.startswith("--no-")}


def stop_configs(tmp: Path) -> dict[str, str]:
    """A kubeconfig path per certain start-up error ("pod-name": a good one)."""
    for sub in ("url", "exec", "good"):
        (tmp / sub).mkdir(exist_ok=True)
    (tmp / "garbage.yaml").write_text("clusters: [unclosed\n")
    return {
        "not-a-url": kubeconfig(tmp / "url", server="not a url"),
        "exec": kubeconfig(tmp / "exec", user="{exec: {command: /nonexistent/x}}"),
        "garbage": str(tmp / "garbage.yaml"),
        "missing": str(tmp / "missing.yaml"),
        "pod-name": kubeconfig(tmp / "good"),
    }


@pytest.mark.usefixtures("isolated")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(invocation=bad_invocations())
def test_bad_command_lines_exit_2_with_one_line(
    invocation: tuple[list[str], dict[str, str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, env, stop = invocation
    configs = stop_configs(tmp_path)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("NODERECOVER_"):
                mp.delenv(name)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.setenv("POD_NAME", "bad\nidentity" if stop == "pod-name" else "fuzz-0")
        # The last --kubeconfig wins over a fuzzed one.
        full = [*argv, f"--kubeconfig={configs[stop]}"]
        code, err = run_main(full, capsys)
    assert code == 2, (full, env, err)
    assert len(err) == 1 and err[0].startswith("noderecover: error: "), (full, env, err)


@pytest.mark.usefixtures("isolated")
def test_plan_against_an_unreachable_server_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        server = f"https://127.0.0.1:{s.getsockname()[1]}"
    code, err = run_main(["plan", "--kubeconfig", kubeconfig(tmp_path, server=server)], capsys)
    assert code == 1
    assert len(err) == 1 and err[0].startswith("noderecover: error: plan: GET /api/v1/nodes"), err


@pytest.mark.usefixtures("isolated")
def test_missing_certificate_authority_file_is_not_called_an_exec_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kubeconfig(tmp_path)
    text = (
        Path(path)
        .read_text()
        .replace(
            "server: 'https://127.0.0.1:1'",
            "server: 'https://127.0.0.1:1', certificate-authority: /nonexistent/ca.crt",
        )
    )
    Path(path).write_text(text)
    code, err = run_main(["run", "--kubeconfig", path, "--http-bind", "127.0.0.1:0"], capsys)
    assert_one_line(code, err, f"--kubeconfig: {path}: ", "/nonexistent/ca.crt")
    assert "exec" not in err[0]


def test_plan_has_no_run_only_flags_and_help_writes_durations_as_durations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`plan --help` lists no flag it ignores (HTTP, election); every duration default is
    written as a duration, once, after a metavar naming its kind."""
    from noderecover.entry.cli import parser

    with pytest.raises(SystemExit):
        parser().parse_args(["plan", "--help"])
    plan_help = capsys.readouterr().out
    for run_only in ("--http-bind", "--leader-elect", "--lease-name ", "--lease-duration"):
        assert run_only not in plan_help
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--help"])
    run_help = " ".join(capsys.readouterr().out.split())
    assert "--http-bind HOST:PORT" in run_help and "VALUE" not in run_help
    assert "--grace DURATION" in run_help and "(default: 30s)" in run_help
    assert "(default: 1m)" in run_help  # --drain-timeout: 60 s
    assert "30.0" not in run_help and "600.0" not in run_help and "(default: )" not in run_help
    assert run_help.count("(default: on in a cluster, off locally)") == 1
    assert "(default: None)" not in run_help
