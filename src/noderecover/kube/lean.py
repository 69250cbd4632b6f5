"""kubernetes_asyncio without its ~1,000 generated API and model modules, until asked for.

noderecover uses four parts of kubernetes_asyncio: `ApiClient` (its HTTP over aiohttp, with
the kubeconfig's TLS and auth), `Configuration`, the kubeconfig loaders (`config`) and the
exceptions; it parses the raw JSON it needs itself. But `import kubernetes_asyncio.<anything>`
runs the top package's `__init__`, which imports `client`, whose `__init__` imports every
generated API class and model (~960 modules, ~38 MiB of RSS: a third of a replica's), and
`client.api_client` imports `client.models` (every model again).

`load()` (run when this module is imported, before anything else of kubernetes_asyncio) puts
those three packages in `sys.modules` as *deferred* packages: the real package's module object
and path, its `__init__` not run yet. The submodules noderecover uses are then imported from
them as usual. Anything else asked of a deferred package (a model class, an API class, the
top package's `__version__`, or all of its names with `dir()`: a test, a benchmark's baseline)
runs the real `__init__` into that same module object at that moment, so every name the real
package has is there: nothing is lost, only deferred. A submodule name is never taken for such
a request (`from kubernetes_asyncio.client import rest` imports `rest` alone).

If kubernetes_asyncio's top package was imported before (another library, a test), `load()`
changes nothing and the full package is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

TOP = "kubernetes_asyncio"
CLIENT = "kubernetes_asyncio.client"
MODELS = "kubernetes_asyncio.client.models"
DEFERRED = (TOP, CLIENT, MODELS)
# Names the real `__init__`s define that are a request for the package (`__all__`: a `*`).
_PACKAGE_DUNDERS = frozenset({"__version__", "__project__", "__all__"})


class _Deferred(types.ModuleType):
    """A package whose `__init__` runs at the first request for a name it does not have yet."""

    _nr_loading = False
    _nr_loaded = False

    def __getattr__(self, name: str) -> Any:
        if self._nr_loading or self._nr_loaded:
            raise AttributeError(name)
        if name.startswith("__") and name not in _PACKAGE_DUNDERS:
            raise AttributeError(name)  # what the import system probes: not a request
        if importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            # A submodule: the import system imports it on its own (and sets it here).
            raise AttributeError(name)
        self.complete()
        return getattr(self, name)

    def __dir__(self) -> list[str]:
        """Every name of the package: its `__init__` runs first."""
        self.complete()
        return list(super().__dir__())

    def complete(self) -> None:
        """Run the real package's `__init__` into this module (once)."""
        if self._nr_loaded or self._nr_loading:
            return
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        self._nr_loading = True
        try:
            spec.loader.exec_module(self)
            self._nr_loaded = True
        finally:
            self._nr_loading = False


def _defer(name: str) -> _Deferred:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    assert isinstance(module, _Deferred)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def load() -> None:
    """Defer the three packages (see the module doc) unless kubernetes_asyncio is already in."""
    if TOP in sys.modules:
        return
    for name in DEFERRED:
        _defer(name)
    client = sys.modules[CLIENT]
    # What kubernetes_asyncio's own config modules take from `kubernetes_asyncio.client`.
    configuration = importlib.import_module(f"{CLIENT}.configuration")
    api_client = importlib.import_module(f"{CLIENT}.api_client")
    client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    client.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
    importlib.import_module(f"{TOP}.config")


def is_deferred(name: str) -> bool:
    """Whether package `name` is still deferred (its `__init__` not run)."""
    module = sys.modules.get(name)
    return isinstance(module, _Deferred) and not module._nr_loaded


load()

from kubernetes_asyncio import config  # noqa: E402
from kubernetes_asyncio.client.api_client import ApiClient  # noqa: E402
from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402

__all__ = ["ApiClient", "Configuration", "config", "is_deferred", "load"]
