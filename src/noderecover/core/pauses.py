"""The cluster-wide pause: where it lives, what it says, how long it is believed. One rule for
every part that must agree - the controller that obeys it (controller.policies), the plugin that
writes it and the read-only previews (`kubectl noderecover pause|status|plan`, `noderecover
plan`), the chart and the docs (docs/pauses.md).

Pure: functions of strings, raw JSON and times given by the caller.

Where (`cluster_pause_location`): the ConfigMap CLUSTER_PAUSE_NAME next to noderecover's
leader Lease - in `--lease-namespace` when it is set, else in the namespace noderecover runs in
(the pod's: POD_NAMESPACE, else the service account's namespace; FALLBACK_NAMESPACE outside a
pod). The plugin resolves the same way from the Deployment it is pointed at: that Deployment's
`--lease-namespace` (flag or NODERECOVER_LEASE_NAMESPACE), else the Deployment's namespace,
which is the pod's.

What (`pause_data`, `parse_cluster_pause`): `data.until` (RFC 3339: the end), `data.reason`,
`data.since` (RFC 3339: when the pause was set, by the API server's clock). A duration
(`--for 2h`) means that long after the API server's time when the pause is written: the plugin
reads the server's clock (a dry-run create answers with a server-set creationTimestamp) and
writes an absolute `until`, so a workstation clock that is off neither shortens nor stretches
it. A pause never lasts more than MAX_PAUSE after its start (`since`, else the ConfigMap's
creationTimestamp), and one whose `until` cannot be read pauses for DEFAULT_CLUSTER_PAUSE
after that start. Nothing unreadable counts as "no pause".

How long an answer is believed (`PAUSE_PROPAGATION_BOUND`): the controller watches that one
ConfigMap (a LIST and WATCH with a fieldSelector on its name): a pause written reaches it with
the watch event. An answer is what proves the watch current: a LIST (the ConfigMap, or none: no
pause), an event, a BOOKMARK, or the stream ended cleanly by the server at the timeoutSeconds it
was asked for (kube.watching). A quiet object's watch gets no event, and kube-apiserver (v1.34,
measured) sends a watch's first BOOKMARK only after a minute, so the pause watch asks for a
short timeout (PAUSE_WATCH_TIMEOUT, jittered up to twice that) and is opened again from its
resourceVersion each time the server ends it: one WATCH request every 5-9 s while nothing
changes, no LIST, no GET. A stream that says nothing for PAUSE_WATCH_SILENCE (longer than any
timeout it asked for: it is hung) is abandoned and the ConfigMap LISTed again. The last answer
is believed for PAUSE_PROPAGATION_BOUND; past that, the pause is unknown and every destructive
step is held (`pause-unknown`), exactly as if paused. So a pause written to the API at time t
stops every destructive step by t + PAUSE_PROPAGATION_BOUND at the latest, readable or not: a
watch that delivers it stops them at once; one that does not (broken, hung, refused) is
believed no longer than PAUSE_PROPAGATION_BOUND after its last answer, which came before t. A
read-only preview (`plan`) reads the ConfigMap once (a GET bounded by PAUSE_READ_TIMEOUT),
believed as long.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noderecover.core.nodes import format_time, parse_time

CLUSTER_PAUSE_NAME = "noderecover-pause"
FALLBACK_NAMESPACE = "kube-system"  # outside a pod, without --lease-namespace (as the Lease)
DEFAULT_CLUSTER_PAUSE = 3600.0  # a cluster pause ConfigMap without a readable `until`
MAX_PAUSE = 7 * 86400.0  # however far its `until`, after its start
MAX_PAUSE_DAYS = 7
MAX_REASON = 256

#: The pause watch's timeoutSeconds (the watcher jitters it up to twice that, an integer: 5-9 s):
#: each stream the server ends at its timeout proves the answer current.
PAUSE_WATCH_TIMEOUT = 5.0
#: No answer for this long (longer than any timeout asked for): the stream is hung, dropped,
#: and the ConfigMap LISTed again.
PAUSE_WATCH_SILENCE = 10.0
PAUSE_READ_TIMEOUT = 5.0  # a preview's one read is bounded by this (and a LIST allowed as long)
#: Seconds between a cluster pause written to the API and the controller refusing every
#: destructive step (readable or not): an answer is believed this long. A LIST after
#: PAUSE_WATCH_SILENCE without an answer, and its read: one lost stream or a slow LIST does
#: not turn a known answer unknown.
PAUSE_PROPAGATION_BOUND = PAUSE_WATCH_SILENCE + PAUSE_READ_TIMEOUT

# Kubernetes' names (apimachinery validation): a namespace is a DNS-1123 label, most object
# names (Deployments, Nodes, custom resources) DNS-1123 subdomains.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def label_error(name: str) -> str | None:
    """Why `name` is not a DNS-1123 label (a namespace), or None."""
    if not name:
        return "must not be empty"
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        return (
            f"{name[:80]!r} is not a valid name (DNS-1123 label: at most 63 lower-case "
            "letters, digits and '-', starting and ending with a letter or digit)"
        )
    return None


def subdomain_error(name: str) -> str | None:
    """Why `name` is not a DNS-1123 subdomain (most object names), or None."""
    if not name:
        return "must not be empty"
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        return (
            f"{name[:80]!r} is not a valid name (DNS-1123 subdomain: at most 253 lower-case "
            "letters, digits, '-' and '.', starting and ending with a letter or digit)"
        )
    return None


@dataclass(frozen=True, slots=True)
class PauseLocation:
    namespace: str
    name: str = CLUSTER_PAUSE_NAME

    @property
    def path(self) -> str:
        """The ConfigMap's API path (names validated: nothing to escape)."""
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"

    @property
    def collection(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    def __str__(self) -> str:
        return f"configmap {self.namespace}/{self.name}"


def own_namespace(lease_namespace: str | None, runs_in: str | None) -> str:
    """noderecover's own namespace: where its leader Lease and the cluster pause live.

    `lease_namespace`: the `--lease-namespace` setting (None or "": not set); `runs_in`: the
    namespace noderecover runs in (the controller: its pod's; the plugin: its Deployment's),
    None when unknown (a controller outside a pod)."""
    return lease_namespace or runs_in or FALLBACK_NAMESPACE


def cluster_pause_location(lease_namespace: str | None, runs_in: str | None) -> PauseLocation:
    """Where the cluster-wide pause lives: next to the leader Lease (see the module doc and
    `own_namespace`). ValueError when that namespace is not a valid one."""
    ns = own_namespace(lease_namespace, runs_in)
    if (why := label_error(ns)) is not None:
        raise ValueError(f"namespace of the pause: {why}")
    return PauseLocation(ns)


@dataclass(frozen=True, slots=True)
class Pause:
    until: float  # wall time (epoch seconds)
    reason: str

    def active(self, wall_now: float) -> bool:
        """Compare with the current wall clock: `until` is a time another party wrote."""
        return wall_now < self.until


def pause_data(until: float, reason: str, since: float) -> dict[str, str]:
    """The ConfigMap's `data` for a pause from `since` (the server's time) to `until`."""
    return {
        "until": format_time(math.ceil(until)),
        "reason": reason[:MAX_REASON],
        "since": format_time(math.floor(since)),
    }


def resolve_until(
    seconds: float | None, until: float | None, server_now: float, flag: str
) -> float:
    """The end of a pause asked for as a duration (`seconds` after `server_now`, the API
    server's time) or a time (`until`); ValueError naming `flag` when it is not a future time
    within MAX_PAUSE of `server_now` (a pause must end by itself, and soon enough to be
    remembered)."""
    if seconds is not None:
        if not seconds > 0:
            raise ValueError(f"{flag}: must be longer than 0s")
        end = server_now + seconds
    elif until is not None:
        end = until
        if end <= server_now:
            raise ValueError(
                f"{flag}: {format_time(until)} is not in the future "
                f"(the API server's time is {format_time(server_now)})"
            )
    else:
        raise ValueError(f"{flag}: required")
    if end - server_now > MAX_PAUSE:
        raise ValueError(f"{flag}: at most {MAX_PAUSE_DAYS} days ahead")
    return float(math.ceil(end))


def parse_cluster_pause(
    raw: Mapping[str, Any] | None, wall_now: float
) -> tuple[Pause | None, str | None]:
    """The pause ConfigMap (None: it does not exist) -> (pause, a warning or None).

    Total: an object that exists is always a pause (maybe expired), never "no pause" for being
    unreadable. Its start is `data.since` when readable (not before the creation nor after
    `wall_now`), else the creationTimestamp, else `wall_now` (no anchor at all: it pauses for
    DEFAULT_CLUSTER_PAUSE from each read, as long as it exists)."""
    if raw is None:
        return None, None
    meta = raw.get("metadata")
    created = parse_time(meta.get("creationTimestamp")) if isinstance(meta, Mapping) else None
    data = raw.get("data")
    data = data if isinstance(data, Mapping) else {}
    until = parse_time(data.get("until"))
    since = parse_time(data.get("since"))
    reason = data.get("reason")
    reason = reason[:MAX_REASON] if isinstance(reason, str) else ""
    start = created
    if since is not None:
        start = min(max(since, created if created is not None else since), wall_now)
    warning = None
    if start is None:
        start = wall_now
        if until is None:
            warning = "cluster pause: no readable until, since nor creationTimestamp"
    cap = start + MAX_PAUSE
    if until is None:
        until = start + DEFAULT_CLUSTER_PAUSE
        warning = warning or (
            f"cluster pause: data.until {str(data.get('until'))[:80]!r} is not an RFC 3339 "
            f"time: paused until {format_time(until)} ({DEFAULT_CLUSTER_PAUSE:.0f}s after "
            "its start)"
        )
    elif until > cap:
        warning = f"cluster pause: until capped at {format_time(cap)} (7 days after its start)"
        until = cap
    return Pause(until, reason), warning
