"""The fault suite, reduced to fit CI (`make chaos` runs it full size): a few counter sessions
under steady load through two gateways while each fault strikes once. Every acknowledged call
stays counted, none runs twice, no session is left in a wrong phase, nothing is orphaned; the
gateway's kill cuts calls in flight, which go again with their call ids (the one fault that
could make a call run twice). The suspend faults land inside the app's suspend (resume), and
no saved state is left in the store but a suspended session's. With authentication on: a
ServiceAccount's token, as a caller's."""

from __future__ import annotations

import json

import pytest

from tests.faults import chaos

from ..conftest import Cluster

pytestmark = pytest.mark.cluster

# The phase the struck session was in when the suspend faults struck (inside the app's step).
STRUCK_IN = {"suspend-worker": "Suspending", "suspend-operator": "Suspending", "resume-operator": "Resuming"}
CI = chaos.Settings(sessions=3, settle=2.0, gateway_down=2.0, node_down=8.0, converge_limit=120.0)


def test_calls_survive_each_fault(kube: Cluster) -> None:
    if kube.state_dir is None:
        pytest.skip("restarts the cluster's own processes: needs the local cluster this run started")
    results = chaos.Suite(kube.state_dir, CI, log=print).run()
    table = json.dumps(results["faults"], indent=1)
    assert [f["fault"] for f in results["faults"]] == ["steady", *chaos.FAULTS]
    for figures in results["faults"]:
        fault = figures["fault"]
        assert figures["converged"], f"{fault}: did not converge within {CI.converge_limit}s\n{table}"
        assert (figures["lost"], figures["ran_twice"]) == (0, 0), f"{fault}: calls lost or run twice\n{table}"
        assert (figures["wrong_phase"], figures["orphans"], figures["orphaned_states"]) == (0, 0, 0), (
            f"{fault}: wrong phase/orphans\n{table}"
        )
        assert figures["acknowledged"] > 0, f"{fault}: no call went through\n{table}"
        # API-server trouble is a 503 the client retries, never the gateway's own failure.
        internal = [why for why in figures["failed_reasons"] if "INTERNAL" in why]
        assert not internal, f"{fault}: calls failed with the gateway's 500\n{table}"
        if fault == "gateway":
            assert figures["cut_in_flight"] > 0, f"the gateway's kill cut no call in flight\n{table}"
        if fault in STRUCK_IN:
            assert figures["struck_in"] == STRUCK_IN[fault], f"{fault}: struck outside the step\n{table}"
        if fault == "suspend-operator":
            assert figures["found_under_way"] and figures["suspended"], f"{fault}: not as struck\n{table}"
        if fault == "resume-operator":
            assert figures["asked_again"], f"{fault}: the new leader did not ask again\n{table}"
