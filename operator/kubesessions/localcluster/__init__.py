"""`kubesessions localcluster`: a real control plane (etcd, kube-apiserver, controller-manager,
scheduler) on loopback, and a node: the process node (pods as local processes, for
development and tests) or the kubelet node (a real kubelet, containerd and runc).

May import ``api``, ``common`` and ``kube``; never ``control``, ``gateway`` or ``client``.
The fault suite that drives it (``make chaos``) is test tooling: ``tests/faults/``.
"""
