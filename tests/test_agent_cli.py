"""`noderecover agent` on bad input: one line naming the flag (or variable), exit 2; a node it
cannot fence: exit 1, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from noderecover.entry.cli import main

BASE = ["agent", "--node-name", "w1"]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["agent"], {}, "--node-name: required"),
        (["agent", "--node-name", "W_1"], {}, "--node-name: 'W_1' is not a valid node name"),
        (["agent"], {"NODERECOVER_NODE_NAME": "-x"}, "NODERECOVER_NODE_NAME: '-x' is not"),
        ([*BASE, "--agent-check-interval", "0s"], {}, "--agent-check-interval: must be greater"),
        ([*BASE, "--agent-check-interval", "-5s"], {}, "--agent-check-interval: negative"),
        ([*BASE, "--agent-isolation-timeout", "5s"], {}, "--agent-isolation-timeout: must be at"),
        ([*BASE, "--agent-watchdog-timeout", "500ms"], {}, "--agent-watchdog-timeout: must be at"),
        ([*BASE, "--agent-reboot", "kexec"], {}, "--agent-reboot: 'kexec' is not one of"),
        ([*BASE, "--agent-reboot", "test"], {}, "--agent-reboot: test needs"),
        ([*BASE, "--agent-test-fence-file", "/tmp/x"], {}, "only with --agent-reboot test"),
        ([*BASE, "--agent-peers", "a:b"], {}, "--agent-peers: bind address 'a:b': port"),
        ([*BASE, "--agent-max-peers", "0"], {}, "--agent-max-peers: 0 must be at least 1"),
        ([*BASE, "--http-bind", "8081"], {}, "--http-bind: bind address '8081' is not"),
        (BASE, {"NODERECOVER_AGENT_ISOLATION_TIMEOUT": "soon"}, "NODERECOVER_AGENT_ISOLATION"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NODERECOVER_NODE_NAME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("noderecover: error: "), err
    assert expected in err, err


def test_a_node_without_watchdog_or_sysrq_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        *BASE,
        "--agent-watchdog-device",
        str(tmp_path / "watchdog"),
        "--agent-sysrq-trigger",
        str(tmp_path / "sysrq-trigger"),
        "--kubeconfig",
        str(tmp_path / "never-read"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot fence this node" in err and "no watchdog device" in err


def test_the_agent_runs_on_asyncios_own_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not uvloop: cut off, the agent cancels connects to reset addresses every check, and
    uvloop aborted the process under that (SIGABRT; issue 23's "stalled" agent's signature)."""
    import asyncio

    from noderecover.entry import agentapp
    from noderecover.entry.agentconfig import AgentConfig

    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def fake_run_agent(cfg: AgentConfig) -> int:
        seen.append(type(asyncio.get_running_loop()))
        return 0

    monkeypatch.setattr(agentapp, "run_agent", fake_run_agent)
    argv = [*BASE, "--agent-reboot", "test", "--agent-test-fence-file", str(tmp_path / "f")]
    assert main(argv) == 0
    assert len(seen) == 1 and seen[0].__module__.startswith("asyncio"), seen
