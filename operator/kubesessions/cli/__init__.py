"""The ``kubesessions`` command: ``entry`` checks the extras and starts ``commands`` (the
argument parser), ``runconfig`` reads the environment and flags the processes need, ``demo``
is ``kubesessions demo``.

The top of the layers: may import every wing, but imports the operator's and the gateway's
modules (and so kopf and kubernetes_asyncio) only inside the command that runs them, after
``kube.slimimports.install()`` (tests/unit/test_layers.py pins this).
"""
