"""The `redfish` provider (sushy): ComputerSystem.Reset ForceOff (ForceRestart for reboot),
then PowerState read back.

Address: the target's BMC address (`https://` assumed without a scheme). System: the spec's
path, else the BMC's only ComputerSystem. Credentials: the Secret's `username` and
`password` (HTTP Basic: no session left open on the BMC). sushy is blocking: every call runs
in a worker thread, with sushy's own connect and read timeouts set to the call's bound and
no server-side retries (the runner retries, with backoff and jitter, within the fence's
deadline).
"""

from __future__ import annotations

from typing import Any

import sushy
import sushy.auth
import sushy.exceptions

from noderecover.core.fencing import FenceAction, FenceSpec, Provider, Target
from noderecover.core.reasons import Blocked
from noderecover.fencing.provider import (
    Credentials,
    FenceError,
    PowerState,
    in_thread,
    refused,
    unreachable,
)

_STATES = {sushy.PowerState.OFF: PowerState.OFF, sushy.PowerState.ON: PowerState.ON}


class Redfish:
    kind = Provider.REDFISH

    def __init__(self, spec: FenceSpec, call_timeout: float = 10.0) -> None:
        self._spec = spec
        self._timeout = call_timeout

    def self_confirmed(self, action: FenceAction) -> bool:
        return False

    def _system(self, target: Target, creds: Credentials) -> Any:
        """The ComputerSystem (blocking: call in a thread)."""
        user, password = creds.get("username"), creds.get("password")
        if not user or password is None:
            raise FenceError(
                Blocked.FENCE_SECRET, "the redfish Secret needs the keys username and password"
            )
        url = target.address if "://" in target.address else f"https://{target.address}"
        root = sushy.Sushy(
            url,
            auth=sushy.auth.BasicAuth(username=user, password=password),
            verify=self._spec.verify_tls,
            # One attempt per call (sushy reads 0 as its default of 3 connection attempts):
            # the runner retries, within the fence's deadline.
            server_side_retries=1,
            server_side_retries_delay=0.5,
            read_timeout=self._timeout,
            connect_timeout=self._timeout,
        )
        return root.get_system(self._spec.system or None)

    async def _call(self, what: str, target: Target, creds: Credentials, fn: Any) -> Any:
        where = f"redfish {what} at {target.address}"
        try:
            return await in_thread(fn, self._timeout + 1.0)
        except FenceError:
            raise
        except TimeoutError as exc:
            raise unreachable(where, exc, creds) from None
        except sushy.exceptions.AccessError as exc:
            raise refused(where, f"access refused (HTTP {exc.status_code})", creds) from None
        except sushy.exceptions.ResourceNotFoundError as exc:
            raise refused(where, f"no such system ({exc.status_code})", creds) from None
        except (sushy.exceptions.ConnectionError, sushy.exceptions.ServerSideError) as exc:
            raise unreachable(where, exc, creds) from None
        except (sushy.exceptions.SushyError, ValueError) as exc:
            raise refused(where, exc, creds) from None

    async def check(self, target: Target, creds: Credentials) -> None:
        await self._call("check", target, creds, lambda: self._system(target, creds).power_state)

    async def fence(self, target: Target, creds: Credentials, action: FenceAction) -> None:
        def reset() -> None:
            system = self._system(target, creds)
            if action is FenceAction.OFF:
                if system.power_state == sushy.PowerState.OFF:
                    return  # off already: a ForceOff may be refused by a real BMC
                system.reset_system(sushy.ResetType.FORCE_OFF)
            else:
                system.reset_system(sushy.ResetType.FORCE_RESTART)

        await self._call(f"reset ({action})", target, creds, reset)

    async def confirm(self, target: Target, creds: Credentials) -> PowerState:
        state = await self._call(
            "power state", target, creds, lambda: self._system(target, creds).power_state
        )
        return _STATES.get(state, PowerState.UNKNOWN)
