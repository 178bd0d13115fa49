"""Kubernetes plumbing: the one API client, calling by path (``kubeapi``); the one watch loop
(``informer``); what a cache keeps of an object (``objects``); a keyed work queue
(``workqueue``); leader election on a Lease (``leader``); installing the CRDs
(``crdinstall``); and keeping unused client code out of our processes (``slimimports``).

May import ``api`` and ``common``, nothing above them.
"""
