"""The bounded API client: error mapping, Retry-After, timeouts on requests and streams."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from noderecover.base.backoff import Backoff
from noderecover.base.metrics import API_ERRORS
from noderecover.kube.client import (
    MERGE_PATCH,
    ApiError,
    Conflict,
    Gone,
    Invalid,
    KubeClient,
    NotFound,
    Timeouts,
    TooManyRequests,
    api_error,
    multiple_pdbs,
)
from noderecover.kube.kubeconfig import KubeconfigError, in_cluster, load_api_client
from tests.conftest import client_for
from tests.fakeapi import FakeKube


async def test_status_errors_carry_code_reason_and_retry_after(
    kube: FakeKube, client: KubeClient
) -> None:
    with pytest.raises(ApiError) as exc:
        await client.request("GET", "/api/v1/nodes/missing")
    assert exc.value.code == 404 and exc.value.reason == "NotFound" and not exc.value.retryable
    kube.fail_next("GET", "^/api/v1/nodes$", 429, retry_after=7)
    with pytest.raises(ApiError) as exc:
        await client.request("GET", "/api/v1/nodes")
    assert exc.value.code == 429 and exc.value.retry_after == 7 and exc.value.retryable


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (404, NotFound),
        (409, Conflict),
        (410, Gone),
        (422, Invalid),
        (429, TooManyRequests),
        (0, ApiError),
        (403, ApiError),
        (500, ApiError),
    ],
)
async def test_an_answer_status_is_an_error_type(
    kube: FakeKube, client: KubeClient, code: int, kind: type[ApiError]
) -> None:
    if code:
        kube.fail_next("GET", "^/api/v1/nodes$", code)
        with pytest.raises(ApiError) as exc:
            await client.request("GET", "/api/v1/nodes")
        assert type(exc.value) is kind and exc.value.code == code
    built = api_error(code, "Reason", "msg", 3.0, "GET", "/x")
    assert type(built) is kind
    assert (built.code, built.reason, built.message, built.retry_after) == (
        code,
        "Reason",
        "msg",
        3,
    )


def test_more_than_one_pdb_is_told_apart_from_other_server_errors() -> None:
    msg = (
        "This pod has more than one PodDisruptionBudget, which the eviction subresource "
        "does not support."
    )
    assert multiple_pdbs(api_error(500, "InternalError", msg))
    assert not multiple_pdbs(api_error(500, "InternalError", "etcd timeout"))
    assert not multiple_pdbs(api_error(429, "TooManyRequests", msg))


async def test_merge_patch_content_type_and_user_agent(kube: FakeKube, client: KubeClient) -> None:
    kube.add_node("a")
    body = await client.request(
        "PATCH", "/api/v1/nodes/a", body={"spec": {"unschedulable": True}}, content_type=MERGE_PATCH
    )
    assert body["spec"]["unschedulable"] is True
    req = kube.requests_matching("PATCH", "/api/v1/nodes/a")[0]
    assert req.content_type == MERGE_PATCH and (req.user_agent or "").startswith("noderecover/")


async def test_user_agent_carries_the_identity(kube: FakeKube) -> None:
    """Both replicas share one ServiceAccount: the identity in the User-Agent tells their
    writes apart in the API server's audit log."""
    client = KubeClient(
        ApiClient(Configuration(host=kube.base_url)), Timeouts(request=2.0), "replica-a"
    )
    try:
        kube.add_node("a")
        await client.request("GET", "/api/v1/nodes/a")
    finally:
        await client.close()
    ua = kube.requests_matching("GET", "/api/v1/nodes/a")[0].user_agent or ""
    assert ua.startswith("noderecover/") and ua.endswith(" (replica-a)")


async def test_a_transport_runtime_error_is_one_failed_request() -> None:
    """uvloop's "File descriptor N is used by transport" (a RuntimeError from connect) must
    fail the request like a connection error, not escape and take the leader down."""

    class Broken:
        user_agent = ""

        async def call_api(self, *args: object, **kw: object) -> object:
            raise RuntimeError("File descriptor 14 is used by transport <TCPTransport>")

        async def close(self) -> None:
            return None

    client = KubeClient(Broken(), Timeouts(request=1.0))
    before = API_ERRORS.labels("get", "0")._value.get()
    with pytest.raises(ApiError) as exc:
        await client.request("GET", "/api/v1/nodes/a")
    assert exc.value.code == 0 and exc.value.reason == "TransportError"
    assert "File descriptor 14" in exc.value.message
    assert API_ERRORS.labels("get", "0")._value.get() == before + 1


async def test_hanging_request_times_out_as_code_0(kube: FakeKube) -> None:
    client = client_for(kube, request=0.2)
    kube.hang("GET", "^/api/v1/nodes$")
    try:
        with anyio.fail_after(3), pytest.raises(ApiError) as exc:
            await client.request("GET", "/api/v1/nodes")
        assert exc.value.code == 0 and exc.value.retryable
    finally:
        kube.release_hangs()
        await client.close()


async def test_silent_stream_read_times_out(kube: FakeKube) -> None:
    client = client_for(kube, stream_read=0.2)
    kube.silence_watches(True)
    try:
        with anyio.fail_after(3), pytest.raises(ApiError) as exc:
            async with client.stream("/api/v1/nodes", [("watch", "true")]) as lines:
                async for _ in lines:
                    pass
        assert exc.value.reason == "Timeout"
    finally:
        kube.silence_watches(False)
        await client.close()


async def test_unreachable_server_is_code_0() -> None:
    from kubernetes_asyncio.client import ApiClient, Configuration

    client = KubeClient(ApiClient(Configuration(host="http://127.0.0.1:9")))
    with pytest.raises(ApiError) as exc:
        await client.request("GET", "/api/v1/nodes", timeout=1.0)
    assert exc.value.code == 0
    await client.close()


def test_backoff_grows_is_bounded_jittered_and_honours_retry_after() -> None:
    import random

    b = Backoff(base=1.0, cap=8.0, jitter=0.5, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(8)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert delays[-1] >= 4.0  # reached the cap region
    assert len(set(delays)) > 1
    assert b.next_delay(at_least=20.0) >= 20.0
    b.reset()
    assert b.next_delay() <= 1.0


async def test_kubeconfig_errors_are_kube_level_and_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kube layer says what is wrong with which file, named as the entry point says
    (`where`: the flag or variable it came from)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert not in_cluster()
    missing = str(tmp_path / "nope")
    with pytest.raises(KubeconfigError, match=f"^NODERECOVER_KUBECONFIG: cannot read {missing}$"):
        await load_api_client(missing, None, "NODERECOVER_KUBECONFIG")
    garbage = tmp_path / "garbage"
    garbage.write_text("this: [is not: a kubeconfig\n")
    with pytest.raises(KubeconfigError) as exc:
        await load_api_client(str(garbage), None)
    assert str(exc.value).startswith(f"--kubeconfig: {garbage}: ") and "\n" not in str(exc.value)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert in_cluster()
