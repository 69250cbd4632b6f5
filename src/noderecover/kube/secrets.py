"""The fence credentials: a GET of exactly the Secret the configuration names, in
noderecover's own namespace (the RBAC grants `get` on that name only). Its values are
returned decoded and never logged (`noderecover.fencing.provider.Credentials` hides them).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

from noderecover.kube.client import KubeClient, NotFound


class SecretMissing(Exception):
    """The Secret is not there (404)."""


class SecretMalformed(Exception):
    """The Secret's data cannot be read (not an object, a value that is not base64 text)."""


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(name, safe='')}"


async def read_secret(kube: KubeClient, namespace: str, name: str) -> dict[str, str]:
    """The Secret's data, decoded. Raises SecretMissing, SecretMalformed, ApiError."""
    try:
        obj = await kube.request("GET", secret_path(namespace, name))
    except NotFound:
        raise SecretMissing(f"Secret {namespace}/{name} not found") from None
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        raise SecretMalformed(f"Secret {namespace}/{name}: data is not an object")
    out: dict[str, str] = {}
    for key, value in data.items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretMalformed(
                f"Secret {namespace}/{name}: key {key!r} is not base64 UTF-8 text"
            ) from None
    return out
