"""The `command` provider: the operator's --fence-command, as before.

Run with NODE_NAME and NODERECOVER_NODE (and the target's uid, providerID and action) in its
environment, bounded by --fence-timeout; exit 0 means the machine is off (the command is its
own proof: `confirm` has nothing more to read).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from noderecover.core.fencing import FenceAction, Provider, Target
from noderecover.core.reasons import Blocked
from noderecover.fencing.process import run
from noderecover.fencing.provider import (
    Credentials,
    FenceError,
    PowerState,
    refused,
    unreachable,
)


class Command:
    kind = Provider.COMMAND

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self._argv = tuple(argv)
        self._timeout = timeout

    def self_confirmed(self, action: FenceAction) -> bool:
        return True

    async def check(self, target: Target, creds: Credentials) -> None:
        if not self._argv:
            raise refused("fence command", "no --fence-command", creds)

    async def fence(self, target: Target, creds: Credentials, action: FenceAction) -> None:
        env = {
            **os.environ,
            "NODE_NAME": target.node,
            "NODERECOVER_NODE": target.node,
            "NODERECOVER_NODE_UID": target.uid,
            "NODERECOVER_PROVIDER_ID": target.provider_id,
            "NODERECOVER_FENCE_ACTION": action.value,
        }
        try:
            ran = await run(self._argv, stdin="", env=env, timeout=self._timeout)
        except TimeoutError as exc:
            what = f"fence command timed out after {self._timeout:g}s"
            raise unreachable(what, exc, creds) from None
        except OSError as exc:
            raise refused("fence command could not run", exc, creds) from None
        if ran.code != 0:
            raise FenceError(
                Blocked.FENCE_REFUSED,
                creds.scrub(f"fence command exit {ran.code}: {ran.output[-300:]}"),
            )

    async def confirm(self, target: Target, creds: Credentials) -> PowerState:
        return PowerState.OFF  # its exit 0 was the proof
