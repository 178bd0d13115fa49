"""What the operator and the gateway take from where they run: a cluster to talk to, the key
session tokens are derived from, and the operator's identity and timings for leader election."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when used: kopf's and the client's imports wait for slimimports
    from kubesessions.kube.leader import LeaseSettings

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
TOKEN_KEY_ENV = "KUBESESSIONS_TOKEN_KEY"  # noqa: S105 - the variable's name, not a secret


def token_key(environ: Mapping[str, str], home: Path) -> bytes:
    """The key session tokens are derived from, which the operator and the gateway must share:
    $KUBESESSIONS_TOKEN_KEY (the chart sets it from its Secret), else this user's key file
    (made on first use, mode 0600), so an operator and a gateway started on one machine agree."""
    if environ.get(TOKEN_KEY_ENV):
        return environ[TOKEN_KEY_ENV].encode()
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    path = config_home / "kube-sessions" / "token-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole, then linked into place: a process starting at the same moment reads
        # either no file or the whole key, and the first link wins.
        draft = path.with_name(f".token-key.{os.getpid()}")
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(secrets.token_urlsafe(32).encode())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes()


def kube_config_problem(environ: Mapping[str, str], home: Path, token: Path = IN_CLUSTER_TOKEN) -> str | None:
    """Why the operator or gateway could not find a cluster to talk to, or None if it can.

    They would otherwise fail deep in a client library (a long traceback ending in
    ConfigException, or kopf retrying its login every minute)."""
    if environ.get("KUBECONFIG"):
        files = [f for f in environ["KUBECONFIG"].split(os.pathsep) if f]
        if any(Path(f).is_file() for f in files):
            return None
        return f"KUBECONFIG={environ['KUBECONFIG']} names no file that exists."
    if environ.get("KUBERNETES_SERVICE_HOST") and token.is_file():
        return None  # in a pod, with its service account's token
    if (home / ".kube" / "config").is_file():
        return None
    return (
        "no cluster to talk to: KUBECONFIG is not set, ~/.kube/config does not exist, and this is not a pod."
    )


def require_kube_config(command: str) -> None:
    problem = kube_config_problem(os.environ, Path.home())
    if problem is not None:
        print(
            f"kubesessions {command}: {problem}\n"
            'For the local cluster run: eval "$(kubesessions localcluster env)" '
            "(add --state-dir if `up` had one); else set KUBECONFIG, or run it in a pod.",
            file=sys.stderr,
        )
        sys.exit(2)


def lease_settings(args: argparse.Namespace) -> LeaseSettings:
    from kubesessions.kube.leader import LeaseSettings

    try:
        return LeaseSettings(
            namespace=args.lease_namespace,
            name=args.lease_name,
            identity=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
        )
    except ValueError as err:
        raise SystemExit(f"kubesessions operator: {err}") from None


def label_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--client-label wants KEY=VALUE, got {text!r}")
    return key, value


def egress_rules_arg(text: str) -> list[dict[str, object]]:
    try:
        rules = json.loads(text)
    except ValueError:
        rules = None
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise argparse.ArgumentTypeError(f"--worker-egress wants a JSON list of egress rules, got {text!r}")
    return rules


def own_namespace() -> str:
    """The operator's namespace in a pod (its service account's), else kube-sessions."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else "kube-sessions"
