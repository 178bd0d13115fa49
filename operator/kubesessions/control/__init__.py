"""The operator: reconciles each Session into its worker Pod, Service and token Secret, keeps
the Apps' warm pools, culls idle sessions.

- ``decide/``: pure deciders (no I/O): what the children look like (``children``), the
  status from the pod (``status``), idleness (``idle``), the warm pool (``pool``), suspend
  and resume (``suspend``).
- ``act/``: the parts that act, one job each, named after the decider they act on:
  ``children`` creates and deletes objects, ``status`` writes the status and Events,
  ``worker`` is the only part that talks to a worker (``/status``, ``/close``, ``/claim``,
  ``/suspend``, ``/resume``),
  ``pool`` keeps the warm pools.
- ``controller``: owns the caches and the queue, reconciles by level, calls the parts;
  ``handlers``: kopf's handlers, which only feed the controller; ``process``: the process
  (leadership, the metrics endpoint).

May import ``api``, ``common``, ``kube`` and ``statestore``; never ``gateway``, ``localcluster`` or
``client``. ``decide`` imports nothing of ``act`` and no I/O library.
"""
