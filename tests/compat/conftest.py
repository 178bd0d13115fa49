"""The gateway fixtures of the cluster tests, for the inference.sh SDK tests."""

from ..cluster.conftest import apps, gateway

__all__ = ["apps", "gateway"]
