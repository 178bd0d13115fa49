"""The fault suite, full size (`make chaos`): 20 counter sessions under steady load from the
project's client with two gateway URLs and a ServiceAccount's token (the gateways authenticate
with TokenReview and SubjectAccessReview), while one fault at a time strikes: kill -9 of the
gateway serving the traffic with calls in flight through it, of the operator leader (two replicas), restarts of kube-apiserver
and etcd, kill -9 of a worker mid-call, the process node down 30 s; then, on one session
suspended by hand while the others call, kill -9 of its worker inside the app's suspend, of the
operator leader inside the suspend, and of the leader inside the resume its next call wakes.
Figures per fault to bench-results/chaos.json and a short table. A fresh local cluster of its own.

Targets (issue 16): 0 acknowledged calls lost, 0 run twice, 0 sessions in a wrong phase,
0 orphaned pods/Services/Secrets, per fault; the gateway's kill cuts calls in flight (issue 25);
(issue 27) 0 saved states in the store that no suspended session owns, and a session struck
inside its suspend or resume by the operator's kill keeps its total.

  .venv/bin/python bench/chaos.py [--sessions N] [--rounds N] [--node-down S] [--faults a,b]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import report

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

# The fault suite is test tooling (tests/faults/), in no installed package: found from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.faults import chaos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--node-down", type=float, default=30.0)
    parser.add_argument("--faults", default=",".join(chaos.FAULTS))
    args = parser.parse_args()
    settings = chaos.Settings(
        sessions=args.sessions,
        rounds=args.rounds,
        node_down=args.node_down,
        faults=tuple(args.faults.split(",")),
    )
    with tempfile.TemporaryDirectory(prefix="ks-bench-chaos-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(), log=lambda _: None)
        try:
            results = chaos.Suite(state_dir, settings, log=lambda line: print(line, flush=True)).run()
        finally:
            cluster.down(state_dir, log=lambda _: None)
    rows = [
        (
            f"{f['fault']}: acked / sent again / cut in flight / failed / lost / twice / wrong / orphans"
            " / orphaned states",
            f"{f['acknowledged']}/{sum(f['sent_again'].values())}/{f['cut_in_flight']}/{f['failed']}"
            f"/{f['lost']}/{f['ran_twice']}/{f['wrong_phase']}/{f['orphans']}/{f['orphaned_states']}"
            + (f" (struck in {f['struck_in']})" if "struck_in" in f else ""),
            f"converged in {f['converge_s']} s" if f["converged"] else "NOT converged",
        )
        for f in results["faults"]
    ]
    report.write("chaos", results, rows)


if __name__ == "__main__":
    main()
