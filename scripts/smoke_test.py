#!/usr/bin/env python3
"""Smoke test of an installed kube-sessions: a Session via kubectl, calls via the gateway.

Needs only python3 and kubectl, so it runs against any cluster (kind in `make e2e-kind`, the
local cluster in the test suite):

    scripts/smoke_test.py --gateway http://127.0.0.1:8080 --namespace NS [--kubeconfig FILE]

It applies an App and a Session, waits for Ready, calls the session through the gateway with
a token of a service account it allows to create Sessions, checks that state is kept across
calls, closes the session, and deletes what it made. Exit 0 on success.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

APP = "smoke-counter"
SESSION = "smoke-session"
WORKER = "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateway", required=True, help="base URL of the gateway")
    parser.add_argument("--namespace", required=True, help="a namespace the release serves")
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--worker-image", default=WORKER)
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for Ready")
    args = parser.parse_args()
    kubectl = [
        args.kubectl,
        *([f"--kubeconfig={args.kubeconfig}"] if args.kubeconfig else []),
        "-n",
        args.namespace,
    ]

    def run(*cmd: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [*kubectl, *cmd], input=stdin, capture_output=True, text=True, timeout=max(60, args.timeout)
        )
        if out.returncode != 0:
            raise SystemExit(f"smoke: kubectl {' '.join(cmd)} failed: {out.stderr.strip()}")
        return out.stdout

    objects = [
        {
            "apiVersion": "kubesessions.io/v1alpha1",
            "kind": "App",
            "metadata": {"name": APP},
            "spec": {
                "image": args.worker_image,
                "entrypoint": "kubesessions_worker.examples.counter:Counter",
            },
        },
        {
            "apiVersion": "kubesessions.io/v1alpha1",
            "kind": "Session",
            "metadata": {"name": SESSION},
            "spec": {"app": APP, "sessionTimeout": 300},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "smoke-caller"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "smoke-caller"},
            "rules": [
                {
                    "apiGroups": ["kubesessions.io"],
                    "resources": ["sessions"],
                    "verbs": ["create", "get", "list"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "smoke-caller"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "smoke-caller"},
            "subjects": [{"kind": "ServiceAccount", "name": "smoke-caller", "namespace": args.namespace}],
        },
    ]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    run("apply", "-f", "-", stdin=manifest)
    try:
        print(f"smoke: waiting up to {args.timeout:.0f}s for session {SESSION} to be Ready", flush=True)
        run("wait", "--for=condition=Ready", f"session/{SESSION}", f"--timeout={int(args.timeout)}s")
        token = run("create", "token", "smoke-caller", "--duration=10m").strip()
        totals = []
        for add in (1, 2, 3):
            body = json.dumps({"app": APP, "input": {"add": add}, "session": SESSION}).encode()
            request = urllib.request.Request(  # noqa: S310 - the gateway URL we were given
                f"{args.gateway.rstrip('/')}/v1/run?namespace={args.namespace}",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - the URL we were given
                    totals.append(json.loads(resp.read())["output"]["total"])
            except urllib.error.HTTPError as err:
                raise SystemExit(
                    f"smoke: gateway answered {err.code}: {err.read().decode(errors='replace')}"
                ) from None
        if totals != [1, 3, 6]:
            raise SystemExit(f"smoke: state was not kept across calls: totals {totals}, expected [1, 3, 6]")
        run("annotate", f"session/{SESSION}", "kubesessions.io/close=smoke test done", "--overwrite")
        deadline = time.monotonic() + 60
        while (
            json.loads(run("get", f"session/{SESSION}", "-o", "json")).get("status", {}).get("phase")
            != "Closed"
        ):
            if time.monotonic() > deadline:
                raise SystemExit("smoke: the session did not close within 60s")
            time.sleep(0.5)
        print("smoke: OK (Ready, state kept across 3 calls through the gateway, closed)")
        return 0
    finally:
        run("delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=manifest)


if __name__ == "__main__":
    sys.exit(main())
