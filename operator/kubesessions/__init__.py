"""kube-sessions: an operator, gateway and client for stateful sessions on warm GPU workers."""

__version__ = "0.1.0"
