"""`kubesessions gateway`: the sessions API over HTTP (``/v1/run`` and the inference.sh
routes), routed to warm worker pods.

May import ``api``, ``common`` and ``kube``; never ``control``, ``localcluster`` or ``client``.
"""
