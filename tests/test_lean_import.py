"""noderecover loads kubernetes_asyncio without its generated API and model modules
(noderecover.kube.lean), and nothing of the real package is lost: whatever else is asked of
it (a model, an API class, `watch`) is there, complete, at that moment.

Each check runs in a fresh interpreter: the test process itself has the full package."""

from __future__ import annotations

import json
import subprocess
import sys

ENTRY_POINTS = (
    "import noderecover.entry.app, noderecover.entry.agentapp, noderecover.entry.kubectl, "
    "noderecover.entry.cli"
)


def _run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_the_entry_points_load_no_generated_module() -> None:
    r = _run(
        f"{ENTRY_POINTS}\n"
        "import json, sys\n"
        "from noderecover.kube.lean import ApiClient, Configuration, config, is_deferred\n"
        "mods = [m for m in sys.modules if m.startswith('kubernetes_asyncio')]\n"
        "print(json.dumps({'mods': mods, 'deferred': [is_deferred(p) for p in "
        "('kubernetes_asyncio', 'kubernetes_asyncio.client', "
        "'kubernetes_asyncio.client.models')], 'loader': config.load_kube_config.__module__,"
        " 'api': ApiClient.__module__, 'conf': Configuration.__module__}))"
    )
    mods = r["mods"]
    assert isinstance(mods, list)
    generated = [m for m in mods if ".client.models." in m or ".client.api." in m]
    assert generated == []
    assert len(mods) < 30, mods  # the client's few modules and config, out of ~1,300
    assert r["deferred"] == [True, True, True]
    assert r["api"] == "kubernetes_asyncio.client.api_client"
    assert r["conf"] == "kubernetes_asyncio.client.configuration"
    assert r["loader"] == "kubernetes_asyncio.config.kube_config"


_NAMES = (
    "import json, kubernetes_asyncio as k\n"
    "from kubernetes_asyncio import client, watch\n"
    "from kubernetes_asyncio.client import models\n"
    "names = {'top': sorted(n for n in dir(k) if not n.startswith('_')), "
    "'client': sorted(n for n in dir(client) if not n.startswith('_')), "
    "'models': sorted(n for n in dir(models) if not n.startswith('_')), "
    "'version': k.__version__, 'watch': watch.Watch.__module__}\n"
)


def test_nothing_of_the_real_package_is_lost() -> None:
    """After the lean load, asking for the package's names gives every name a plain import
    of kubernetes_asyncio gives (its APIs, its models, `watch`, `__version__`)."""
    full = _run(_NAMES + "print(json.dumps(names))")
    lean = _run(f"{ENTRY_POINTS}\n" + _NAMES + "print(json.dumps(names))")
    assert lean["version"] == full["version"] and lean["watch"] == full["watch"]
    for part in ("client", "models"):
        assert lean[part] == full[part], part
    full_top, lean_top = full["top"], lean["top"]
    assert isinstance(full_top, list) and isinstance(lean_top, list)
    assert set(full_top) <= set(lean_top)
    assert isinstance(full["models"], list) and len(full["models"]) > 500  # compares something


def test_a_model_asked_for_after_the_lean_load_deserializes() -> None:
    """A baseline that builds V1Node models (bench/core_throughput.py) in a process that
    loaded noderecover first: the models come with the first request for one."""
    r = _run(
        f"{ENTRY_POINTS}\n"
        "import asyncio, json\n"
        "async def main():\n"
        "    from kubernetes_asyncio.client import ApiClient, V1Node\n"
        "    from kubernetes_asyncio.watch import Watch\n"
        "    async with ApiClient() as api:\n"
        "        class R:\n"
        "            data = json.dumps({'metadata': {'name': 'w1'}})\n"
        "        node = api.deserialize(R(), 'V1Node')\n"
        "    ev = Watch().unmarshal_event(json.dumps("
        "{'type': 'ADDED', 'object': {'kind': 'Node', 'metadata': {'name': 'w2'}}}), 'V1Node')\n"
        "    print(json.dumps({'a': node.metadata.name, 'b': ev['object'].metadata.name, "
        "'is': isinstance(node, V1Node)}))\n"
        "asyncio.run(main())"
    )
    assert r == {"a": "w1", "b": "w2", "is": True}
