"""kube-sessions: an operator, gateway and client for stateful sessions on warm GPU workers.

The package is read folder by folder; each folder is a wing whose docstring says what it is
and what it may import. From the bottom up (docs/architecture.md draws it; the contract in
``pyproject.toml``'s ``[tool.importlinter]`` is checked by ``make test``):

- ``api``: the custom resources and every wire name (``api.names``: standard library only).
- ``common``: small helpers (time, logs, the event loop, metrics text).
- ``kube``: Kubernetes plumbing: the one API client, the watch loop, the work queue, leases.
- ``statestore``: the object store of suspended sessions' state (botocore; beside ``kube``).
- ``control`` (the operator), ``gateway``, ``localcluster`` and ``client``: the products,
  which never import each other.
- ``cli``: the ``kubesessions`` command, which starts them.

The worker runtime is another package, ``kubesessions_worker``; of this one it uses only
``api.names`` and ``common`` (both standard library only).
"""

__version__ = "0.1.0"
