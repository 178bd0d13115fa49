"""The JavaScript/TypeScript SDK from npm (@inferencesh/sdk, pinned in js/package-lock.json),
unmodified, against the gateway: the session flows of its README (js/flows.ts, run with tsx), in
both ways it follows a task (NDJSON stream, and ``stream: false`` polling), each task started
through one gateway replica and followed through another; and the same flows from a browser-like
caller (CORS preflights) where the gateway allows its origin."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..cluster.conftest import GatewayProcess, service_account_token
from ..conftest import REPO, Cluster, OperatorProcess

pytestmark = pytest.mark.cluster

JS = Path(__file__).parent / "js"
ORIGIN = "https://app.example"
# Every flow but expiry (which waits out an idle timeout, so it runs once, below).
FLOWS = ("sessions", "errors", "replicas", "cancel", "function")


@pytest.fixture(scope="module")
def tsx() -> Path:
    """tsx from js/node_modules, installed from the lock file by `make compat-js` (at once when done)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(
            "no Node.js/npm on this machine (Debian: apt-get install nodejs npm): JavaScript SDK not run"
        )
    subprocess.run(["make", "--no-print-directory", "compat-js"], cwd=REPO, check=True, timeout=300)
    return JS / "node_modules" / ".bin" / "tsx"


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    return service_account_token(kube, namespace, "sdk", allowed=True)


def replica(kube: Cluster, namespace: str, tmp_path: Path, name: str, *flags: str) -> GatewayProcess:
    log_dir = tmp_path / name
    log_dir.mkdir()
    return GatewayProcess(kube, namespace, log_dir, *flags).start()


@pytest.fixture
def replicas(
    kube: Cluster, namespace: str, gateway: GatewayProcess, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """The ``gateway`` fixture's replica (CORS off, the default) and a second one beside it."""
    other = replica(kube, namespace, tmp_path, "other")
    yield gateway, other
    other.stop()


@pytest.fixture
def cors_replicas(
    kube: Cluster, namespace: str, apps: None, operator: OperatorProcess, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two replicas that allow pages from ORIGIN."""
    started = [replica(kube, namespace, tmp_path, f"cors-{i}", "--cors-origin", ORIGIN) for i in (1, 2)]
    yield started[0], started[1]
    for gw in started:
        gw.stop()


def run_flows(
    tsx: Path,
    gateways: tuple[GatewayProcess, GatewayProcess],
    token: str,
    follow: str,
    flows: tuple[str, ...],
    origin: str | None = None,
) -> str:
    env = {
        **os.environ,
        "KS_GATEWAYS": ",".join(gw.url for gw in gateways),
        "KS_TOKEN": token,
        "KS_FOLLOW": follow,
    }
    if origin:
        env["KS_ORIGIN"] = origin
    done = subprocess.run(
        [str(tsx), "flows.ts", *flows], cwd=JS, env=env, capture_output=True, text=True, timeout=400
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    for mode in follow.split(","):
        for flow in flows:
            assert f"ok {flow} {mode}" in done.stdout, output[-6000:]
    return done.stdout


@pytest.mark.parametrize("follow", ["stream", "poll"])
def test_readme_session_flows_through_two_replicas(
    tsx: Path, replicas: tuple[GatewayProcess, GatewayProcess], token: str, follow: str
) -> None:
    run_flows(tsx, replicas, token, follow, FLOWS)


def test_an_expired_session_raises(
    tsx: Path, replicas: tuple[GatewayProcess, GatewayProcess], token: str
) -> None:
    run_flows(tsx, replicas, token, "poll", ("expiry",))


def test_browser_like_caller_where_its_origin_is_allowed(
    tsx: Path, cors_replicas: tuple[GatewayProcess, GatewayProcess], token: str
) -> None:
    out = run_flows(tsx, cors_replicas, token, "stream,poll", FLOWS, origin=ORIGIN)
    assert f"browser-like fetch from {ORIGIN}" in out


def request(url: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,x-client-source",
}


def test_preflight_from_an_allowed_origin_and_from_another(
    cors_replicas: tuple[GatewayProcess, GatewayProcess], token: str
) -> None:
    url = f"{cors_replicas[0].url}/apps/run"
    status, headers = request(url, "OPTIONS", {"Origin": ORIGIN, **PREFLIGHT})
    assert status == 204, headers
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == PREFLIGHT["Access-Control-Request-Headers"]
    assert "Origin" in headers["Vary"] and "Access-Control-Allow-Credentials" not in headers

    status, headers = request(url, "OPTIONS", {"Origin": "https://evil.example", **PREFLIGHT})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers, headers
    # Answers themselves: marked for the allowed origin only (errors too).
    auth = {"Authorization": f"Bearer {token}"}
    status, headers = request(f"{cors_replicas[0].url}/sessions", "GET", {"Origin": ORIGIN, **auth})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN, headers
    status, headers = request(f"{cors_replicas[0].url}/sessions", "GET", {"Origin": ORIGIN})
    assert status == 401 and headers["Access-Control-Allow-Origin"] == ORIGIN, headers
    status, headers = request(
        f"{cors_replicas[0].url}/sessions", "GET", {"Origin": "https://evil.example", **auth}
    )
    assert status == 200 and "Access-Control-Allow-Origin" not in headers, headers


def test_cors_is_off_by_default(replicas: tuple[GatewayProcess, GatewayProcess], token: str) -> None:
    status, headers = request(f"{replicas[0].url}/apps/run", "OPTIONS", {"Origin": ORIGIN, **PREFLIGHT})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers, headers
    auth = {"Authorization": f"Bearer {token}", "Origin": ORIGIN}
    status, headers = request(f"{replicas[0].url}/sessions", "GET", auth)
    assert status == 200 and "Access-Control-Allow-Origin" not in headers, headers
