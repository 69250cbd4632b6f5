"""The provider for a configuration: one exhaustive match (a new Provider is listed by mypy)."""

from __future__ import annotations

from typing import assert_never

from noderecover.core.fencing import Provider
from noderecover.core.settings import Config
from noderecover.fencing.provider import FenceProvider


def provider_for(cfg: Config, call_timeout: float = 10.0) -> FenceProvider | None:
    """The fence provider `cfg` names (None: no fencing). The libraries are imported here,
    only for the provider in use."""
    kind = cfg.fence_provider
    match kind:
        case None:
            return None
        case Provider.COMMAND:
            from noderecover.fencing.command import Command

            return Command(cfg.fence_command, cfg.fence_timeout)
        case Provider.REDFISH:
            from noderecover.fencing.redfish import Redfish

            return Redfish(cfg.fence, min(call_timeout, cfg.fence_timeout))
        case Provider.AWS:
            from noderecover.fencing.aws import Aws

            return Aws(cfg.fence, min(call_timeout, cfg.fence_timeout))
        case Provider.FENCE_AGENT:
            from noderecover.fencing.agent import FenceAgent

            return FenceAgent(cfg.fence, cfg.fence_timeout)
        case _:  # pragma: no cover
            assert_never(kind)
