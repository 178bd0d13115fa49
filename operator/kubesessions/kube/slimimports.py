"""Keep the operator and gateway processes from importing client code they never use.

Measured (docs/scaling.md): importing ``kubernetes_asyncio`` loads all of its ~1,500 generated
modules (every API group and model) because its package ``__init__`` files import them
eagerly, about 38 MB of RSS, and the first use of any one API class loads all of them (14 MB);
the operator uses one (CoordinationV1Api, for its Lease; everything else goes by path,
:mod:`kubesessions.kube.kubeapi`), the gateway a few. And kopf imports the sync
``kubernetes`` package whenever it is installed (its third-party type checks), another
~7 MB, though nothing in these processes uses it.

:func:`install` (the CLI's first step for ``operator`` and ``gateway``) marks ``kubernetes``
unimportable and replaces the four eager ``kubernetes_asyncio`` package modules with lazy
ones: a name is imported from its own module on first use, found from the ``from ... import``
lines of the real ``__init__``. The cost: this knows that layout of the generated package;
tests/unit/test_slimimports.py checks it against the installed version.

This module is the one place where we reach into a third-party library's internals (the import
layout above, and :func:`skip_proxy_lookups`); each reach is pinned by a test against the
installed version.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
import urllib.request
from pathlib import Path
from typing import Any

# The eager packages; a lazy stand-in for each resolves its names on first use.
LAZY = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models",
)
_FROM_IMPORT = re.compile(r"^from (kubernetes_asyncio[\w.]*) import (\w+)(?: as (\w+))?\s*$", re.MULTILINE)
_IMPORT_AS = re.compile(r"^import (kubernetes_asyncio[\w.]*) as (\w+)\s*$", re.MULTILINE)
_CONSTANT = re.compile(r"^(__\w+__) = \"([^\"]*)\"\s*$", re.MULTILINE)  # __version__


class _LazyPackage(types.ModuleType):
    def __init__(self, name: str, init: Path) -> None:
        super().__init__(name)
        self.__path__ = [str(init.parent)]
        self.__file__ = str(init)
        text = init.read_text()
        # name -> (module, attribute or None for the module itself)
        self._where: dict[str, tuple[str, str | None]] = {
            alias or attr: (module, attr) for module, attr, alias in _FROM_IMPORT.findall(text)
        }
        self._where |= {alias: (module, None) for module, alias in _IMPORT_AS.findall(text)}
        for name, value in _CONSTANT.findall(text):
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            module, attr = self._where[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None
        value = importlib.import_module(module)
        if attr is not None:
            value = getattr(value, attr)
        setattr(self, name, value)  # next time a plain attribute
        return value


def install() -> None:
    """Call before anything imports kopf or kubernetes_asyncio; idempotent."""
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # None: ImportError
    if any(name in sys.modules for name in LAZY):
        return  # already imported (or already lazy): nothing to save
    spec = importlib.util.find_spec(LAZY[0])
    if spec is None or spec.origin is None:
        return
    root = Path(spec.origin).parent
    for name in LAZY:
        init = root.joinpath(*name.split(".")[1:], "__init__.py")
        sys.modules[name] = _LazyPackage(name, init)
    for name in LAZY[1:]:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[name])


def skip_proxy_lookups(api: Any) -> None:
    """The API client's aiohttp session looks for proxy variables and a .netrc on every request,
    two hops to a thread each (about a tenth of the operator's CPU in a burst). With no proxy
    set there is nothing to find (credentials come from the kubeconfig or the pod), so the look
    is turned off: kubernetes_asyncio makes its session with ``trust_env=True`` and offers no
    setting for it, so its private flag is the only switch."""
    if not urllib.request.getproxies():
        api.rest_client.pool_manager._trust_env = False
