"""The operator and gateway processes' slim imports (kubesessions.kube.slimimports), each in a fresh
interpreter so that nothing this test process already imported hides an import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_operator_and_gateway_never_import_the_sync_client_nor_every_generated_module() -> None:
    result = _run(
        """
        import asyncio, json, sys
        from kubesessions.kube import slimimports
        slimimports.install()
        import kubesessions.control.process, kubesessions.gateway.app  # everything the two commands run

        async def use():
            from kubernetes_asyncio import client, config, watch
            api = client.ApiClient()
            class Response:
                data = json.dumps({"metadata": {"name": "w"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
            pod = api.deserialize(Response(), "V1Pod")
            await api.close()
            for name in ("CoreV1Api", "CustomObjectsApi", "CoordinationV1Api", "V1TokenReview", "V1SubjectAccessReview"):
                getattr(client, name)
            return pod.status.conditions[0].type, config.load_kube_config.__name__, watch.Watch.__name__

        used = asyncio.run(use())
        print(json.dumps({
            "kubernetes": sys.modules.get("kubernetes") is not None,
            "generated": sum(name.startswith("kubernetes_asyncio.") for name in sys.modules),
            "used": used,
        }))
        """
    )
    assert result["kubernetes"] is False, "the sync kubernetes package was imported"
    assert result["used"] == ["Ready", "load_kube_config", "Watch"]
    # Of ~1,500 generated modules, the operator needs the few it calls and deserializes into.
    assert isinstance(result["generated"], int) and result["generated"] < 150, result


def test_botocore_is_loaded_only_where_a_state_store_is_configured() -> None:
    """About 20 MB of an operator's RSS (docs/performance.md); without a store, suspend is off
    and nothing needs it."""
    result = _run(
        """
        import json, sys
        from kubesessions.kube import slimimports
        slimimports.install()
        import kubesessions.control.process, kubesessions.gateway.app
        before = "botocore" in sys.modules
        from kubesessions.statestore import StoreConfig, open_store
        open_store(StoreConfig("http://127.0.0.1:9", "b", "us-east-1", "k", "s"))
        print(json.dumps({"before": before, "after": "botocore" in sys.modules}))
        """
    )
    assert result == {"before": False, "after": True}


def test_the_lazy_packages_offer_every_name_the_real_ones_do() -> None:
    """Checks slimimports' reading of the generated __init__ files against the installed version."""
    result = _run(
        """
        import json, sys
        from kubesessions.kube import slimimports
        slimimports.install()
        lazy = {name: sorted(sys.modules[name]._where) for name in slimimports.LAZY}
        for name, names in lazy.items():
            for attr in names:
                getattr(sys.modules[name], attr)
        versions = {name: getattr(sys.modules[name], "__version__", None) for name in slimimports.LAZY}
        for name in slimimports.LAZY:
            del sys.modules[name]
        import importlib, types
        missing = {}
        for name, names in lazy.items():
            real = importlib.import_module(name)
            assert getattr(real, "__version__", None) == versions[name], name
            public = {a for a, v in vars(real).items() if not a.startswith("_") and not isinstance(v, types.ModuleType)}
            missing[name] = sorted(public - set(names) - {"absolute_import"})
        print(json.dumps(missing))
        """
    )
    assert all(names == [] for names in result.values()), result


async def test_the_api_client_skips_proxy_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The private flag skip_proxy_lookups sets is the one aiohttp reads (its public property),
    and it is left alone where a proxy is configured."""
    from kubernetes_asyncio import client

    from kubesessions.kube.slimimports import skip_proxy_lookups

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    api = client.ApiClient(client.Configuration())
    assert api.rest_client.pool_manager.trust_env is True
    skip_proxy_lookups(api)
    assert api.rest_client.pool_manager.trust_env is False
    await api.close()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    api = client.ApiClient(client.Configuration())
    skip_proxy_lookups(api)
    assert api.rest_client.pool_manager.trust_env is True
    await api.close()
