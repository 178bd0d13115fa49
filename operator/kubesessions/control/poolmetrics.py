"""The warm pools' Prometheus metrics, per App: size, ready, claims (hit/miss), claim latency."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kubesessions.api.models import WarmPoolStatus
from kubesessions.common.metrics import Histogram, writes_lines

Key = tuple[str, str]  # (namespace, app)


@dataclass
class PoolMetrics:
    pools: dict[Key, WarmPoolStatus] = field(default_factory=dict)
    hits: Counter[Key] = field(default_factory=Counter)
    misses: Counter[Key] = field(default_factory=Counter)
    latency: dict[Key, Histogram] = field(default_factory=dict)
    upkeep: Counter[str] = field(default_factory=Counter)  # "verb resource" -> API writes

    def observe_pool(self, key: Key, status: WarmPoolStatus) -> None:
        self.pools[key] = status

    def hit(self, key: Key, seconds: float) -> None:
        self.hits[key] += 1
        self.latency.setdefault(key, Histogram()).observe(seconds)

    def miss(self, key: Key) -> None:
        self.misses[key] += 1

    def forget(self, key: Key) -> None:
        self.pools.pop(key, None)

    def lines(self) -> list[str]:
        out = [
            "# HELP kubesessions_pool_size Warm pool size asked for (spec.warmPool.size).",
            "# TYPE kubesessions_pool_size gauge",
            *(f"kubesessions_pool_size{{{_labels(k)}}} {s.size}" for k, s in sorted(self.pools.items())),
            "# HELP kubesessions_pool_ready Warm pool workers ready to be claimed.",
            "# TYPE kubesessions_pool_ready gauge",
            *(f"kubesessions_pool_ready{{{_labels(k)}}} {s.ready}" for k, s in sorted(self.pools.items())),
            "# HELP kubesessions_pool_claims_total New Sessions of a pooled App: from the pool (hit) or cold (miss).",
            "# TYPE kubesessions_pool_claims_total counter",
        ]
        for result, counter in (("hit", self.hits), ("miss", self.misses)):
            out += [
                f'kubesessions_pool_claims_total{{{_labels(k)},result="{result}"}} {n}'
                for k, n in sorted(counter.items())
            ]
        out += writes_lines(
            "kubesessions_pool_upkeep_writes_total",
            "API writes keeping the pools (not a Session's).",
            self.upkeep,
        )
        out += [
            "# HELP kubesessions_pool_claim_seconds From a Session's reconcile to its pool worker taking it.",
            "# TYPE kubesessions_pool_claim_seconds histogram",
        ]
        for key, hist in sorted(self.latency.items()):
            out += hist.render("kubesessions_pool_claim_seconds", _labels(key))
        return out


def _labels(key: Key) -> str:
    return f'namespace="{key[0]}",app="{key[1]}"'
