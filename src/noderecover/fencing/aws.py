"""The `aws` provider (boto3): StopInstances with Force of the instance in the Node's
spec.providerID (`aws:///<zone>/i-...`), then the instance state read back until `stopped`.

Region: the spec's, else the providerID's zone less its letter. Credentials: the Secret's
`aws_access_key_id`, `aws_secret_access_key` (and `aws_session_token`) when a Secret is
named, else boto3's default chain (IRSA, instance profile). boto3 is blocking: every call
runs in a worker thread, with botocore's connect and read timeouts set to the call's bound
and one attempt (the runner retries, with backoff and jitter, within the fence's deadline).
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from noderecover.core.fencing import FenceAction, FenceSpec, Provider, Target, aws_region
from noderecover.core.reasons import Blocked
from noderecover.fencing.provider import (
    Credentials,
    FenceError,
    PowerState,
    in_thread,
    refused,
    unreachable,
)

_REFUSED = (
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID.Malformed",
    "OperationDisableApiStopNotPermitted",
    "UnsupportedOperation",
    "IncorrectInstanceState",
)
_STATES = {
    "stopped": PowerState.OFF,
    "terminated": PowerState.OFF,
    "running": PowerState.ON,
    "pending": PowerState.ON,
}


class Aws:
    kind = Provider.AWS

    def __init__(self, spec: FenceSpec, call_timeout: float = 10.0) -> None:
        self._spec = spec
        self._timeout = call_timeout
        # One client per (region, keys) for this provider's life (a fence: check, stop,
        # confirm polls): building one reads botocore's service model, 0.1-2 s of a worker
        # thread. Clients are thread-safe; the lock keeps two threads from building twice.
        self._clients: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        self._lock = threading.Lock()

    def self_confirmed(self, action: FenceAction) -> bool:
        return False

    def _client(self, target: Target, creds: Credentials) -> Any:
        region = self._spec.region or aws_region(target.provider_id)
        if not region:
            raise FenceError(
                Blocked.FENCE_NO_TARGET,
                f"no AWS region: none set and none in providerID {target.provider_id!r}",
            )
        keys: dict[str, str] = {}
        if creds:
            if not creds.get("aws_access_key_id") or not creds.get("aws_secret_access_key"):
                raise FenceError(
                    Blocked.FENCE_SECRET,
                    "the aws Secret needs aws_access_key_id and aws_secret_access_key",
                )
            keys = {
                "aws_access_key_id": creds["aws_access_key_id"],
                "aws_secret_access_key": creds["aws_secret_access_key"],
            }
            if creds.get("aws_session_token"):
                keys["aws_session_token"] = creds["aws_session_token"]
        key = (region, tuple(sorted(keys.items())))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                config = botocore.config.Config(
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    retries={"max_attempts": 1, "mode": "standard"},
                )
                client = boto3.session.Session().client(
                    "ec2",
                    region_name=region,
                    endpoint_url=self._spec.endpoint or None,
                    config=config,
                    **keys,
                )
                self._clients[key] = client
            return client

    async def _call(self, what: str, target: Target, creds: Credentials, fn: Any) -> Any:
        where = f"aws {what} of {target.instance}"
        try:
            return await in_thread(fn, self._timeout * 2 + 1.0)
        except FenceError:
            raise
        except TimeoutError as exc:
            raise unreachable(where, exc, creds) from None
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _REFUSED:
                raise refused(where, code, creds) from None
            raise unreachable(where, exc, creds) from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            if isinstance(exc, botocore.exceptions.NoCredentialsError):
                raise FenceError(Blocked.FENCE_SECRET, f"{where}: no AWS credentials") from None
            raise unreachable(where, exc, creds) from None

    def _state(self, target: Target, creds: Credentials) -> str:
        reply = self._client(target, creds).describe_instances(InstanceIds=[target.instance])
        for reservation in reply.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                if instance.get("InstanceId") == target.instance:
                    return str(instance.get("State", {}).get("Name", ""))
        raise FenceError(Blocked.FENCE_REFUSED, f"aws: instance {target.instance} not found")

    async def check(self, target: Target, creds: Credentials) -> None:
        await self._call("check", target, creds, lambda: self._state(target, creds))

    async def fence(self, target: Target, creds: Credentials, action: FenceAction) -> None:
        if action is not FenceAction.OFF:
            raise FenceError(Blocked.FENCE_REFUSED, "aws: only action off is supported")

        def stop() -> None:
            self._client(target, creds).stop_instances(InstanceIds=[target.instance], Force=True)

        await self._call("stop", target, creds, stop)

    async def confirm(self, target: Target, creds: Credentials) -> PowerState:
        state = await self._call("state", target, creds, lambda: self._state(target, creds))
        return _STATES.get(state, PowerState.UNKNOWN)
