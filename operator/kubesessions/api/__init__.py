"""The API: the custom resources' models (``models``, with ``modelbase`` and ``podfields``),
the CRDs generated from them (``crds``), and every wire name (``names``).

Imports nothing else of ours. ``names`` is standard library only, so the client and the
worker share it; the models need pydantic, which only the ``[operator]`` extra brings.
This ``__init__`` imports nothing, so importing ``names`` loads no model.
"""
