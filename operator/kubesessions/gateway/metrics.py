"""Prometheus text for the gateway: requests by route and code, call latency, cache sizes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from kubesessions.common.metrics import Histogram


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int, str]] = Counter()  # (route, status, code)
        self.latency: dict[str, Histogram] = {}  # route -> seconds
        # name -> (type, help, read): values kept elsewhere (the cache, the session store).
        self.read: dict[str, tuple[str, str, Callable[[], float]]] = {}

    def observe(self, route: str, status: int, code: str, seconds: float) -> None:
        self.requests[(route, status, code)] += 1
        self.latency.setdefault(route, Histogram()).observe(seconds)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.read[name] = ("gauge", help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.read[name] = ("counter", help_text, read)

    def render(self) -> str:
        lines = [
            "# HELP kubesessions_gateway_requests_total Requests answered, by route, status and problem code.",
            "# TYPE kubesessions_gateway_requests_total counter",
        ]
        for (route, status, code), count in sorted(self.requests.items()):
            lines.append(
                f'kubesessions_gateway_requests_total{{route="{route}",status="{status}",code="{code}"}} {count}'
            )
        lines += [
            "# HELP kubesessions_gateway_request_seconds Time to answer (to the first byte for streams).",
            "# TYPE kubesessions_gateway_request_seconds histogram",
        ]
        for route, histogram in sorted(self.latency.items()):
            lines += histogram.render("kubesessions_gateway_request_seconds", f'route="{route}"')
        for name, (kind, help_text, read) in sorted(self.read.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {read()}"]
        return "\n".join(lines) + "\n"
