"""The operator's settings: made once by the command line (`kubesessions operator`), read by
every part of the controller."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubesessions.api import tokens
from kubesessions.control.decide.children import PolicyPeers
from kubesessions.statestore import StoreConfig


@dataclass
class OperatorSettings:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    retention: float = 600.0  # seconds a finished Session stays as a tombstone
    termination_grace: int = 30
    workers: int = 32  # reconciles wait on the API, not the CPU
    worker_timeout: float = 2.0  # seconds for one /status call to a worker
    unreachable_limit: int = 5  # failed /status calls in a row before WorkerLost
    idle_grace: int = 60  # the worker exits by itself when idle past timeout + this
    orphan_sweep_interval: float = 300.0
    # Seconds for a worker's /suspend or /resume: its app's own step plus moving the state
    # (the worker's limit on the app's step is the call timeout, 600 s).
    suspend_timeout: float = 660.0
    # Who may reach workers (a NetworkPolicy in each namespace with sessions); None: no policy.
    network_policy: PolicyPeers | None = None
    # Where suspended sessions' state goes (the KUBESESSIONS_STATE_STORE_* environment, which
    # the chart fills from a Secret); None: no store, idle sessions end instead of suspending.
    state_store: StoreConfig | None = field(default_factory=StoreConfig.from_env, repr=False)
    # Session tokens are derived from it; the gateway must hold the same (see api/tokens.py).
    token_key: bytes = field(default_factory=tokens.new_key, repr=False)
