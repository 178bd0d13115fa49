"""`make demo`: the local cluster, the operator and the gateway, then sessions used through the client.

Shows the sessions API end to end: a model loaded once then fast calls (timed), its first call
from a warm pool beside the cold one, state kept across calls (and a second function on it),
streamed output, an explicit close, and an idle session expiring into "session not found". Everything it starts is stopped at the end, unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from kubesessions.client import Client, KubeSessionsError
from kubesessions.kube.crdinstall import apply_crds
from kubesessions.localcluster import binaries, cluster, objectstore
from kubesessions.localcluster.nodeconfig import NodeConfig

NAMESPACE = "kubesessions-demo"
REPO = Path(__file__).resolve().parent.parent.parent
RETENTION = 5  # seconds a finished session stays a tombstone (410) before it is gone (404)

# A caller of the gateway: a ServiceAccount allowed to use sessions in the demo namespace.
CALLER_RBAC = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: demo-client, namespace: {NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: session-user, namespace: {NAMESPACE}}}
rules:
- {{apiGroups: [kubesessions.io], resources: [sessions], verbs: [create, get, list, delete]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: demo-client, namespace: {NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: session-user}}
subjects: [{{kind: ServiceAccount, name: demo-client, namespace: {NAMESPACE}}}]
"""


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _say(text: str) -> None:
    print(f"    {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our own http URL
            if resp.status == 200:
                return
        time.sleep(0.1)  # a process coming up has no event to wait on
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s; see {log}")


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    _say(f"{label}: {(time.perf_counter() - started) * 1000:.1f} ms")


class Demo:
    def __init__(self, state_dir: cluster.StateDir) -> None:
        self.state_dir = state_dir
        self.kubectl = str(binaries.ensure_binaries(("kubectl",))["kubectl"])
        self.logs = state_dir.root / "demo"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started_cluster = False

    def kubectl_run(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.state_dir.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def spawn(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        # The state store's settings too: the operator suspends sessions into the cluster's store.
        env = {
            **os.environ,
            **objectstore.operator_env(self.state_dir.root),
            "KUBECONFIG": str(self.state_dir.kubeconfig),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "kubesessions"), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc, log

    def up(self) -> tuple[str, str]:
        """Cluster, CRDs, Apps, operator, gateway; returns (gateway URL, caller token)."""
        if cluster.running_state(self.state_dir) is None:
            _step(
                "starting the local cluster: etcd, kube-apiserver, controller-manager, scheduler, process node"
            )
            cluster.up(self.state_dir, NodeConfig(), log=_say)
            self.started_cluster = True
        else:
            _step(f"using the local cluster already running in {self.state_dir.root}")
        _step("installing the CRDs (Session, App) and the example Apps")
        for name in asyncio.run(apply_crds(60, self.state_dir.kubeconfig)):
            _say(f"customresourcedefinition/{name} applied and established")
        with contextlib.suppress(RuntimeError):
            self.kubectl_run("create", "namespace", NAMESPACE)
        for manifest in ("app-counter.yaml", "apps.yaml"):
            self.kubectl_run("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / manifest))
        _say(self.kubectl_run("get", "apps.kubesessions.io", "-n", NAMESPACE).strip().replace("\n", "\n    "))
        _step(f"starting the operator and the gateway (logs in {self.logs})")
        op_port, gw_port = _free_port(), _free_port()
        op, op_log = self.spawn(
            "operator",
            "operator",
            "--namespace",
            NAMESPACE,
            "--retention",
            str(RETENTION),
            "--metrics-port",
            str(op_port),
        )
        gw, gw_log = self.spawn(
            "gateway", "gateway", "--namespace", NAMESPACE, "--host", "127.0.0.1", "--port", str(gw_port)
        )
        _wait_http(f"http://127.0.0.1:{op_port}/healthz", op, op_log)
        url = f"http://127.0.0.1:{gw_port}"
        _wait_http(f"{url}/readyz", gw, gw_log)
        _say(f"operator pid {op.pid}, gateway pid {gw.pid} at {url}")
        self.kubectl_run("apply", "-f", "-", stdin=CALLER_RBAC)
        token = self.kubectl_run("create", "token", "demo-client", "-n", NAMESPACE, "--duration=24h").strip()
        _say("caller: ServiceAccount demo-client (Role session-user), token from the TokenRequest API")
        return url, token

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.started_cluster:
            _step("stopping the local cluster")
            cluster.down(self.state_dir)


def show_sessions(client: Client, demo: Demo) -> None:
    _step("model: load once (cold), then fast calls on the warm worker")
    with _timed('first call, session "new" (pod start + setup + call)'):
        first = client.run({"app": "model", "input": {"seed": 0}, "session": "new", "session_timeout": 600})
    model = first["session_id"]
    _say(f"session_id {model}; setup took {first['output']['setupSeconds']} s inside the worker")
    for seed in range(1, 4):
        with _timed(f"warm call {seed}"):
            client.run({"app": "model", "input": {"seed": seed}, "session": model})

    show_warm_pool(client, demo)

    _step("counter: state kept across calls (a stateful conversation)")
    with client.session("counter", session_timeout=300) as session:
        for n in (1, 2, 3):
            _say(f"add {n} -> {session.run({'add': n})['output']}")
        kept = session.id
        # Other functions of the app, on the same state (the SDK's session.call(name, input)).
        peek = client.run({"app": "counter", "function": "peek", "input": {}, "session": kept})
        _say(f"function peek -> {peek['output']}")
    _say(f"left the `with` block: session {kept} closed")

    _step("stream: output as the app yields it")
    stream = client.stream(
        {"app": "stream", "input": {"text": "warm workers answer fast", "delay": 0.15}, "session": "new"}
    )
    started = time.perf_counter()
    for token in stream:
        _say(f"+{(time.perf_counter() - started) * 1000:5.0f} ms  {token!r}")

    _step("explicit close: the worker is stopped, the id answers 'session not found'")
    client.close_session(model)
    _say(f"closed {model}")
    try:
        client.run({"app": "model", "input": {"seed": 9}, "session": model})
    except KubeSessionsError as exc:
        _say(f"{type(exc).__name__} (HTTP {exc.status}): {exc}")

    _step("expiry: an echo session with session_timeout 2 s, left idle")
    echo = client.run({"app": "echo", "input": "hello", "session": "new", "session_timeout": 2})["session_id"]
    _say(f"session {echo} answered; now idle")
    started = time.perf_counter()
    while client.get_session(echo)["phase"] not in ("Expired", "Closed", "Failed"):
        time.sleep(0.25)  # the demo watches over HTTP like a client would
    _say(f"Expired {time.perf_counter() - started:.1f} s later ({client.get_session(echo)['reason']})")
    for when in ("during the tombstone's retention", f"after retention ({RETENTION} s)"):
        try:
            client.run({"app": "echo", "input": "hello?", "session": echo})
        except KubeSessionsError as exc:
            _say(f"{when}: {type(exc).__name__} (HTTP {exc.status}): {exc}")
        time.sleep(RETENTION + 1)


def show_warm_pool(client: Client, demo: Demo) -> None:
    _step("warm pool: `kubectl scale app/model --replicas 1` keeps a model worker set up ahead")
    _say(demo.kubectl_run("scale", "app/model", "-n", NAMESPACE, "--replicas", "1").strip())
    deadline = time.monotonic() + 120
    ready = "jsonpath={.status.warmPool.ready}"
    while demo.kubectl_run("get", "app/model", "-n", NAMESPACE, "-o", ready).strip() != "1":
        if time.monotonic() > deadline:
            raise RuntimeError("the model's warm pool did not become ready within 120 s")
        time.sleep(0.25)  # watching like a user with kubectl would
    with _timed('first call, session "new", from the warm pool (claim + call)'):
        pooled = client.run({"app": "model", "input": {"seed": 0}, "session": "new", "session_timeout": 600})
    started = "jsonpath={.status.startedFrom}"
    source = demo.kubectl_run("get", "sessions", pooled["session_id"], "-n", NAMESPACE, "-o", started).strip()
    _say(
        f"session {pooled['session_id']}: status.startedFrom {source}; its setup ran before it was asked for"
    )
    client.close_session(pooled["session_id"])
    demo.kubectl_run("scale", "app/model", "-n", NAMESPACE, "--replicas", "0")


def run_demo(keep: bool = False, state_dir: Path | None = None) -> int:
    started = time.monotonic()
    demo = Demo(cluster.StateDir(state_dir or cluster.default_state_dir()))
    try:
        url, token = demo.up()
        with Client(url, token=token, namespace=NAMESPACE, request_timeout=120) as client:
            show_sessions(client, demo)
    except (RuntimeError, KubeSessionsError, cluster.ClusterError, binaries.BinaryError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        demo.stop()
        return 1
    _step(f"done in {time.monotonic() - started:.0f} s")
    if keep:
        env = "\n".join(cluster.env_lines(demo.state_dir))
        print(
            f"left running (--keep). Reach it with:\n{env}\n"
            f"export KUBESESSIONS_URL={url} KUBESESSIONS_NAMESPACE={NAMESPACE}\n"
            f"export KUBESESSIONS_GATEWAY_TOKEN=$(kubectl create token demo-client -n {NAMESPACE})\n"
            f'curl -s $KUBESESSIONS_URL/v1/run -H "Authorization: Bearer $KUBESESSIONS_GATEWAY_TOKEN" '
            f'-H \'X-Kubesessions-Namespace: {NAMESPACE}\' -d \'{{"app": "counter", "input": {{"add": 1}}, "session": "new"}}\'\n'
            f"stop it: kill {' '.join(str(p.pid) for p in demo.procs)}; {cluster.command(demo.state_dir, 'down')}"
        )
    else:
        demo.stop()
    return 0
