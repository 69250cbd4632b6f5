"""The `fence-agent` provider: a ClusterLabs fence agent (fence_ipmilan, fence_redfish, ...),
with medik8s fence-agents-remediation's parameters (core.fencing.agent_options).

The agent is run from /usr/sbin by name (`fence_[a-z0-9_]+`, never a path a policy gives),
as argv with no shell and no arguments: every option, credentials included, goes on its
standard input (`name=value` lines, the agents' stdin protocol), so nothing shows in `ps`.
Exit 0 of `--action off|reboot` means done (the agent waits for the state itself);
`confirm` runs `--action status` (exit 0: on, 2: off).
"""

from __future__ import annotations

import os

from noderecover.core.fencing import (
    AGENT_DIR,
    FenceAction,
    FenceSpec,
    Provider,
    Target,
    agent_options,
    agent_stdin,
)
from noderecover.core.reasons import Blocked
from noderecover.fencing.process import Ran, run
from noderecover.fencing.provider import (
    Credentials,
    FenceError,
    PowerState,
    refused,
    unreachable,
)

STATUS_ON, STATUS_OFF = 0, 2  # the fence agents' `status` exit codes
_UNREACHABLE_HINTS = ("unable to connect", "timed out", "timeout", "connection refused")


class FenceAgent:
    kind = Provider.FENCE_AGENT

    def __init__(self, spec: FenceSpec, timeout: float, agent_dir: str = AGENT_DIR) -> None:
        self._spec = spec
        self._timeout = timeout
        self._path = os.path.join(agent_dir, spec.agent)

    def self_confirmed(self, action: FenceAction) -> bool:
        return action is FenceAction.REBOOT  # on again by design: nothing Off to read back

    async def _run(self, target: Target, creds: Credentials, action: str) -> Ran:
        try:
            opts = agent_options(self._spec, target, creds, FenceAction.OFF)
        except ValueError as exc:
            raise FenceError(Blocked.FENCE_SECRET, creds.scrub(str(exc))) from None
        opts["--action"] = action
        where = f"{self._spec.agent} --action {action} for {target}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C",
            "PYTHONWARNINGS": "ignore",  # the agents' own deprecation noise out of messages
        }
        try:
            return await run([self._path], stdin=agent_stdin(opts), env=env, timeout=self._timeout)
        except TimeoutError as exc:
            raise unreachable(f"{where}: no answer in {self._timeout:g}s", exc, creds) from None
        except OSError as exc:
            raise refused(f"{where}: could not run", exc, creds) from None

    def _failed(self, target: Target, creds: Credentials, ran: Ran, action: str) -> FenceError:
        text = creds.scrub(
            f"{self._spec.agent} --action {action} for {target}: exit {ran.code}: "
            f"{ran.output[-300:]}"
        )
        low = ran.output.lower()
        if "waiting to power off" in low:  # the agent's own read-back never saw Off
            return FenceError(Blocked.FENCE_NOT_OFF, text)
        if any(h in low for h in _UNREACHABLE_HINTS):
            return FenceError(Blocked.FENCE_UNREACHABLE, text, retryable=True)
        return FenceError(Blocked.FENCE_REFUSED, text)

    async def check(self, target: Target, creds: Credentials) -> None:
        await self.confirm(target, creds)

    async def fence(self, target: Target, creds: Credentials, action: FenceAction) -> None:
        ran = await self._run(target, creds, action.value)
        if ran.code != 0:
            raise self._failed(target, creds, ran, action.value)

    async def confirm(self, target: Target, creds: Credentials) -> PowerState:
        ran = await self._run(target, creds, "status")
        if ran.code == STATUS_OFF:
            return PowerState.OFF
        if ran.code == STATUS_ON:
            return PowerState.ON
        raise self._failed(target, creds, ran, "status")
