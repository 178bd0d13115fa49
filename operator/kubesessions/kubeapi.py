"""The one way the operator, the gateway and the CLI get a Kubernetes API client."""

from __future__ import annotations

import urllib.request

from kubernetes_asyncio import client, config

API_CONNECTIONS = 16  # at most, to the API server, per process (the operator's, the gateway's)


async def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # Each pooled TLS connection to the API server holds ~0.3 MB (asyncio's 256 KiB read buffer,
    # OpenSSL's state); the client's default of 100 kept ~110 open after a 100-Session burst,
    # 14 MiB of buffers. The API server on a small control plane serves few at once anyway.
    configuration.connection_pool_maxsize = API_CONNECTIONS
    api = client.ApiClient(configuration)
    if not urllib.request.getproxies():
        # The client's aiohttp session looks for proxy variables and a .netrc on every request,
        # two hops to a thread each (about a tenth of the operator's CPU in a burst). With no proxy
        # set there is nothing to find (credentials come from the kubeconfig or the pod).
        api.rest_client.pool_manager._trust_env = False
    return api
