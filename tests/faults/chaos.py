"""The fault suite on a local cluster: counter sessions under steady load from the project's
client (two gateway URLs), while faults strike one at a time; figures per fault.

The gateways authenticate as a real deployment's do (TokenReview, SubjectAccessReview; the
admin kubeconfig is their identity), and the load calls with a ServiceAccount's token bound to
the README's caller Role, so the API-server faults strike authentication too.

Faults: ``gateway`` (``kill -9`` of the gateway serving the traffic while calls are in flight
through it; restarted a few seconds later, as its Deployment would), ``operator`` (``kill -9`` of the leader of two replicas; a
new standby replaces it), ``apiserver`` and ``etcd`` (restarted), ``worker`` (``kill -9`` of a
session's worker mid-call) and ``node`` (the process node and its pods crash, and it comes
back after ``node_down`` seconds). Three strike inside a suspend or a resume, of one session
whose load thread is paused (idle, as a suspend needs) and which is suspended by hand while
the others keep calling; the app's suspend (resume) is held there by a gate file
(tests/cluster/apps/gated.py): ``suspend-worker`` (``kill -9`` of its worker: the session
ends ``Failed``/``WorkerLost`` with nothing saved), ``suspend-operator`` and ``resume-operator``
(``kill -9`` of the leader; the resume is the wake-on-call of the thread's next call): the
session keeps its state, its next call answers its total + 1. After each fault no saved state
is left in the state store but a suspended Session's. Run by ``bench/chaos.py`` (``make
chaos``) and, reduced, by ``tests/cluster/test_chaos.py``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubesessions.api.names import JSON
from kubesessions.client import Client, KubeSessionsError, RecoveringSession, Retry
from kubesessions.localcluster import objectstore, processes
from kubesessions.localcluster.ports import free_port
from kubesessions.localcluster.state import StateDir
from kubesessions.statestore import StoreConfig
from kubesessions.statestore.store import StateStore
from tests.faults import faults
from tests.faults.chaoscheck import Expect, Kube, KubeError, check
from tests.faults.chaosledger import Ledger, Outcome, Phase

FAULTS = (
    "gateway",
    "operator",
    "apiserver",
    "etcd",
    "worker",
    "node",
    "suspend-worker",
    "suspend-operator",
    "resume-operator",
)
GROUP = ("kubesessions.io", "v1alpha1")
# The counter, its suspend and resume held while a gate file exists (a strike lands inside).
GATED_APP = Path(__file__).resolve().parents[1] / "cluster" / "apps"


def _app(gate: Path) -> JSON:
    return {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "App",
        "metadata": {"name": "counter"},
        "spec": {
            "image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
            "entrypoint": "gated:GatedCounter",
            "env": [
                {"name": "PYTHONPATH", "value": str(GATED_APP)},
                {"name": "GATE_DIR", "value": str(gate)},
            ],
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "suspend": {"enabled": True, "keepSeconds": 3600},
        },
    }


CALLER = "chaos-caller"  # the load's ServiceAccount
# The README's session-caller Role.
CALLER_RULES = [
    {
        "apiGroups": ["kubesessions.io"],
        "resources": ["sessions"],
        "verbs": ["create", "get", "list", "delete", "patch"],
    }
]


@dataclass(frozen=True)
class Settings:
    sessions: int = 20
    delay: float = 0.3  # seconds each call takes on the worker
    faults: tuple[str, ...] = FAULTS
    rounds: int = 1  # each fault this many times
    settle: float = 10.0  # seconds of steady load before the faults and after each
    gateway_down: float = 5.0
    node_down: float = 30.0
    converge_limit: float = 180.0


@dataclass
class Fleet:
    """The operator replicas and gateways the suite runs, as processes it can kill."""

    state_dir: StateDir
    namespace: str
    logs: Path
    operators: list[processes.ProcessRecord] = field(default_factory=list)
    gateways: dict[str, tuple[processes.ProcessRecord, list[str]]] = field(default_factory=dict)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> processes.ProcessRecord:
        env = {**os.environ, "KUBECONFIG": str(self.state_dir.kubeconfig), **(env or {})}
        return processes.spawn(name, argv, self.logs / f"{name}.log", env=env)

    def revive(self) -> int:
        """Start a replacement for each operator replica that exited by itself (a leader that
        could not renew its Lease exits, and its Deployment starts it again): how many."""
        gone = [rec for rec in self.operators if not processes.alive(rec)]
        for rec in gone:
            self.operators.remove(rec)
            self.operator()
        return len(gone)

    def operator(self) -> processes.ProcessRecord:
        ns, port = self.namespace, free_port()
        argv = [_cli(), "operator", "--namespace", ns, "--metrics-port", str(port), "--retention", "60"]
        # The local cluster's state store, as the chart hands it to the operator.
        store = objectstore.operator_env(self.state_dir.root)
        rec = self._spawn("operator", [*argv, "--leader-elect", "--lease-namespace", ns], store)
        self.operators.append(rec)
        _await_http(f"http://127.0.0.1:{port}/metrics", "an operator replica")
        return rec

    def gateway(self, argv: list[str] | None = None) -> str:
        port = free_port()
        argv = argv or [_cli(), "gateway", "--namespace", self.namespace]  # --auth kubernetes
        argv += (
            [] if "--port" in argv else ["--host", "127.0.0.1", "--port", str(port), "--start-timeout", "90"]
        )
        url = f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"
        self.gateways[url] = (self._spawn("gateway", argv), argv)
        _await_http(f"{url}/readyz", "a gateway")
        return url

    def stop(self) -> None:
        processes.stop([*self.operators, *(rec for rec, _ in self.gateways.values())])


def _cli() -> str:
    return str(Path(sys.executable).parent / "kubesessions")


def _await_http(url: str, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s")
        time.sleep(0.2)


class Load:
    """One thread per session, each calling ``{"add": 1}`` on its (recovering) session in turn;
    a thread can be paused (its session idle) while the others call."""

    def __init__(
        self, gateways: list[str], settings: Settings, ledger: Ledger, token: str, namespace: str
    ) -> None:
        # Each retry is noted in the ledger: how many calls a fault cut mid-flight (sent again
        # with their call id) or answered 502/503/504.
        retry = Retry(attempts=5, backoff=0.2, max_backoff=3, on_retry=ledger.retried)
        self.client = Client(gateways, token=token, namespace=namespace, request_timeout=120, retry=retry)
        self.settings, self.ledger = settings, ledger
        self.started: dict[int, float] = {}  # load thread -> when its call in flight began
        self.sessions = [
            RecoveringSession(self.client, "counter", session_timeout=3600) for _ in range(settings.sessions)
        ]
        self.stopping = threading.Event()
        self.going = [threading.Event() for _ in range(settings.sessions)]  # cleared: paused
        self.calling = [threading.Lock() for _ in range(settings.sessions)]  # held through a call
        for going in self.going:
            going.set()
        self.threads = [
            threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(settings.sessions)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def call(self, n: int, add: int) -> bool:
        session, started = self.sessions[n], time.monotonic()
        self.started[n] = started
        try:
            result = session.run({"add": add, "delay": self.settings.delay})
        except KubeSessionsError as exc:
            error = f"{type(exc).__name__} {exc.code or exc.status}".strip()
            self.ledger.add(Outcome(n, started, time.monotonic(), session.session_id, add, error=error))
            return False
        finally:
            del self.started[n]
        total = int(result["output"]["total"])
        self.ledger.add(Outcome(n, started, time.monotonic(), str(result["session_id"]), add, total))
        return True

    def _loop(self, n: int) -> None:
        while not self.stopping.is_set():
            self.going[n].wait()
            with self.calling[n]:
                if not self.going[n].is_set() or self.stopping.is_set():
                    continue  # paused while it waited for the lock
                called = self.call(n, 1)
            if not called:
                self.stopping.wait(0.5)  # a failing session is not hammered

    def pause(self, n: int) -> str:
        """Stop thread ``n``'s calls; returns, once none of them is in flight, its session."""
        self.going[n].clear()
        with self.calling[n]:
            session = self.sessions[n].session_id
        if session is None:
            raise RuntimeError(f"load thread {n} holds no session to strike")
        return session

    def unpause(self, n: int) -> None:
        self.going[n].set()

    def await_in_flight(self, timeout: float = 60) -> None:
        """Return while a call is on a worker: in flight for a quarter of the time a call takes
        there, and for less than three quarters (longer: it may be waiting on a retry)."""
        low, high = self.settings.delay / 4, self.settings.delay * 3 / 4
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if any(low <= now - started < high for started in list(self.started.values())):
                return
            time.sleep(0.005)
        raise RuntimeError(f"no call was in flight within {timeout:.0f}s")

    def waiting_on(self, since: float) -> list[str]:
        """The sessions of the load threads with no call acknowledged since ``since``."""
        done = self.ledger.acked_since(since)
        return [str(s.session_id) for n, s in enumerate(self.sessions) if n not in done]

    def held(self) -> set[str]:
        return {s.session_id for s in self.sessions if s.session_id}

    def stop(self) -> None:
        """Stop the threads, then read every session's total once more (an add of 0)."""
        self.stopping.set()
        for going in self.going:
            going.set()
        for thread in self.threads:
            thread.join(timeout=300)
        for n in range(len(self.sessions)):
            self.call(n, 0)


class Suite:
    def __init__(self, state_dir: StateDir, settings: Settings, log: Callable[[str], None]) -> None:
        self.state_dir, self.settings, self.log = state_dir, settings, log
        self.kube = Kube(state_dir.kubeconfig)
        self.namespace = f"chaos-{uuid.uuid4().hex[:6]}"
        self.fleet = Fleet(state_dir, self.namespace, state_dir.logs / self.namespace)
        self.gate = state_dir.logs / self.namespace / "gate"  # the gated app's (GATE_DIR)
        config = StoreConfig.from_env(objectstore.operator_env(state_dir.root))
        self.store = StateStore(config) if config is not None else None
        self.ledger = Ledger()
        self.phases: list[Phase] = []

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        self.gate.mkdir(parents=True)
        token = _prepare(self.kube, self.namespace, _app(self.gate))
        try:
            for _ in range(2):
                self.fleet.operator()
            urls = [self.fleet.gateway(), self.fleet.gateway()]
            load = Load(urls, self.settings, self.ledger, token, self.namespace)
            load.start()
            try:
                yield load
            finally:
                load.stop()
        finally:
            self.fleet.stop()
            self.kube.close()
            if self.store is not None:
                self.store.close()

    def run(self) -> dict[str, Any]:
        with self.running() as load:
            self._phase("steady", load, lambda: time.monotonic(), Expect())
            for round_ in range(self.settings.rounds):
                for fault in self.settings.faults:
                    name = fault if self.settings.rounds == 1 else f"{fault} #{round_ + 1}"
                    self._phase(name, load, *self._injector(fault, load))
        violations = self.ledger.audit()
        if self.phases:
            self.phases[-1].end = float("inf")  # the final reads belong to the last phase
        rows = []
        for phase in self.phases:
            rows.append({"fault": phase.name, **self.ledger.figures(phase, violations), **phase.figures})
        return {"settings": self.settings.__dict__, "namespace": self.namespace, "faults": rows}

    def _phase(self, name: str, load: Load, inject: Callable[[], float], expect: Expect) -> None:
        self.log(f"fault: {name}")
        phase = Phase(name, time.monotonic())
        self.phases.append(phase)
        applied = inject()  # the moment the fault has been fully applied (the thing is back)
        deadline = phase.start + self.settings.converge_limit
        restarted = 0
        while True:
            restarted += self.fleet.revive()
            result = check(self.kube, self.namespace, load.held(), expect, self.store)
            calls_back = len(self.ledger.acked_since(applied)) == self.settings.sessions
            if (calls_back and result.settled) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        took = time.monotonic() - phase.start
        if restarted:
            phase.figures["operator_replicas_restarted"] = restarted
        if not calls_back:
            phase.figures["calls_waiting_on"] = load.waiting_on(applied)
        phase.figures.update(
            result.figures(),
            converged=calls_back and result.settled,
            converge_s=round(took, 1),
            **expect.notes,
        )
        self.log(f"  converged={calls_back and result.settled} in {took:.1f}s: {result.figures()}")
        time.sleep(self.settings.settle)
        phase.end = time.monotonic()

    def _injector(self, fault: str, load: Load) -> tuple[Callable[[], float], Expect]:
        s, expect = self.settings, Expect()
        if fault == "gateway":

            def inject() -> float:
                url = load.client.endpoints.urls[0]  # the one answering now
                rec, argv = self.fleet.gateways.pop(url)
                # Killed with calls on it: they must go again, with their call ids, through
                # the other gateway and run once (the figures' cut_in_flight counts them).
                load.await_in_flight()
                faults.kill([rec])
                time.sleep(s.gateway_down)
                self.fleet.gateway(argv)
                return time.monotonic()

        elif fault == "operator":

            def inject() -> float:
                return self._kill_leader(expect)

        elif fault in ("apiserver", "etcd"):

            def inject() -> float:
                faults.restart(self.state_dir, "kube-apiserver" if fault == "apiserver" else "etcd")
                _await_api(self.kube)
                return time.monotonic()

        elif fault == "worker":

            def inject() -> float:
                victim = sorted(load.held())[0]
                pod = self.kube.call("GET", f"/api/v1/namespaces/{self.namespace}/pods/{victim}")
                expect.worker_lost.add(victim)
                faults.kill(faults.pod_processes(self.state_dir, pod["metadata"]["uid"]))
                return time.monotonic()

        elif fault == "node":

            def inject() -> float:
                expect.worker_lost.update(load.held())
                faults.restart(self.state_dir, faults.NODE, crash=True, down_for=s.node_down)
                return time.monotonic()

        elif fault == "suspend-worker":

            def inject() -> float:
                with self._held("suspend"):
                    n, victim = self._suspend_by_hand(load)
                    self._started("suspend")
                    expect.notes["struck_in"] = self._phase_of(victim)
                    expect.worker_lost.add(victim)  # nothing saved: it ends as a lost worker does
                    pod = self.kube.call("GET", f"/api/v1/namespaces/{self.namespace}/pods/{victim}")
                    faults.kill(faults.pod_processes(self.state_dir, pod["metadata"]["uid"]))
                load.unpause(n)  # its next call finds the session ended, and starts a new one
                return time.monotonic()

        elif fault == "suspend-operator":

            def inject() -> float:
                with self._held("suspend"):
                    n, victim = self._suspend_by_hand(load)
                    expect.kept.add(victim)
                    self._started("suspend")
                    expect.notes["struck_in"] = self._phase_of(victim)
                    killed = self._kill_leader(expect)
                    # The new leader meets the suspend still under way (and waits for the worker's exit).
                    underway = f"{self.namespace}/{victim}: a suspend asked for before is under way"
                    expect.notes["found_under_way"] = _within(lambda: self._logged(underway), 60)
                expect.notes["suspended"] = _within(lambda: self._phase_of(victim) == "Suspended", 60)
                load.unpause(n)  # its next call wakes it: it must answer its total + 1
                return killed

        elif fault == "resume-operator":

            def inject() -> float:
                n, victim = self._suspend_by_hand(load)
                expect.kept.add(victim)
                _until(lambda: self._phase_of(victim) == "Suspended", 120, f"{victim} to be Suspended")
                with self._held("resume"):
                    resuming = self._logged(f"{self.namespace}/{victim}: resuming")
                    load.unpause(n)  # its next call wakes it (and waits for the resume)
                    self._started("resume")
                    expect.notes["struck_in"] = self._phase_of(victim)
                    killed = self._kill_leader(expect)
                    # The new leader asks the worker again while the first resume still runs.
                    asked = f"{self.namespace}/{victim}: resuming"
                    expect.notes["asked_again"] = _within(lambda: self._logged(asked) > resuming, 60)
                return killed

        else:
            raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        return inject, expect

    def _suspend_by_hand(self, load: Load) -> tuple[int, str]:
        """Pause the first load thread (its session idle) and ask for its session's suspend."""
        if self.store is None:
            raise RuntimeError("the suspend faults need the local cluster's state store; it has none")
        victim = load.pause(0)
        load.client.suspend(victim)
        return 0, victim

    @contextlib.contextmanager
    def _held(self, step: str) -> Iterator[None]:
        """The gated app's ``step`` (suspend or resume) held while inside."""
        (self.gate / f"{step}-started").unlink(missing_ok=True)
        (self.gate / f"hold-{step}").touch()
        try:
            yield
        finally:
            (self.gate / f"hold-{step}").unlink()

    def _started(self, step: str) -> None:
        """Return once the gated app's ``step`` has started (and so is held inside)."""
        _until((self.gate / f"{step}-started").exists, 120, f"the app's {step} to start")

    def _kill_leader(self, expect: Expect) -> float:
        """``kill -9`` of the operator's leader; a standby takes over, a new one replaces it."""
        leader = _leader(self.kube, self.namespace, self.fleet.operators, wait=60)
        assert leader is not None, "no operator replica holds the Lease"
        killed = time.monotonic()
        faults.kill([leader])
        self.fleet.operators.remove(leader)
        if _leader(self.kube, self.namespace, self.fleet.operators, wait=120) is not None:
            expect.notes["failover_s"] = round(time.monotonic() - killed, 1)
        self.fleet.operator()
        return killed

    def _phase_of(self, session: str) -> str:
        path = f"/apis/{GROUP[0]}/{GROUP[1]}/namespaces/{self.namespace}/sessions/{session}"
        return str((self.kube.call("GET", path).get("status") or {}).get("phase"))

    def _logged(self, text: str) -> int:
        """How many lines of the operator replicas' log (one file, all replicas) hold ``text``."""
        log = self.fleet.logs / "operator.log"
        return sum(text in line for line in log.read_text(errors="replace").splitlines())


def _established(kube: Kube, path: str) -> bool:
    from kubesessions.kube.crdinstall import established

    return established(kube.call("GET", path))


def _prepare(kube: Kube, namespace: str, app: JSON) -> str:
    """The CRDs, the namespace, the counter App and the load's caller: its token."""
    from kubesessions.api.crds import app_crd, session_crd

    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in (session_crd(), app_crd()):
        try:
            kube.call("POST", crds, crd)
        except KubeError as exc:
            if exc.status != 409:  # installed already
                raise

    for path in (f"{crds}/{crd['metadata']['name']}" for crd in (session_crd(), app_crd())):
        _until(functools.partial(_established, kube, path), 60, f"the CRD {path} to be established")
    kube.call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    _until(
        lambda: kube.items(f"/api/v1/namespaces/{namespace}/serviceaccounts"),
        60,
        f"the default ServiceAccount of {namespace}",
    )
    kube.call("POST", f"/apis/{GROUP[0]}/{GROUP[1]}/namespaces/{namespace}/apps", app)
    return _caller_token(kube, namespace)


def _caller_token(kube: Kube, namespace: str) -> str:
    """A ServiceAccount bound to the README's caller Role, and a token of it, as a caller has."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    kube.call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": CALLER}})
    kube.call("POST", f"{rbac}/roles", {"metadata": {"name": "session-caller"}, "rules": CALLER_RULES})
    binding = {
        "metadata": {"name": f"{CALLER}-session-caller"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "session-caller"},
        "subjects": [{"kind": "ServiceAccount", "name": CALLER, "namespace": namespace}],
    }
    kube.call("POST", f"{rbac}/rolebindings", binding)
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 6 * 3600},
    }
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{CALLER}/token"
    token: str = kube.call("POST", path, request)["status"]["token"]
    return token


def _until(ready: Callable[[], object], timeout: float, what: str) -> None:
    if not _within(ready, timeout):
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _within(ready: Callable[[], object], timeout: float) -> bool:
    """Whether ``ready()`` came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return True
        except OSError:
            pass  # the API server may be restarting
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _leader(
    kube: Kube, namespace: str, replicas: list[processes.ProcessRecord], wait: float
) -> processes.ProcessRecord | None:
    """The replica holding the operator's Lease, waiting up to ``wait`` seconds for one."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/kube-sessions-operator"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            holder = kube.call("GET", path)["spec"].get("holderIdentity") or ""
            for rec in replicas:
                if holder.endswith(f"-{rec.pid}"):
                    return rec
        time.sleep(0.1)
    return None


def _await_api(kube: Kube) -> None:
    _until(lambda: kube.call("GET", "/api/v1/namespaces?limit=1"), 120, "the API server")
