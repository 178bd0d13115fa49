"""The `kubesessions` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from kubesessions.cli.runconfig import (
    egress_rules_arg,
    label_arg,
    lease_settings,
    own_namespace,
    require_kube_config,
    token_key,
)
from kubesessions.common import logs
from kubesessions.localcluster.nodeconfig import DEFAULT_IMAGE_MAP, NODE_KINDS

# The Helm chart carries a copy of crds/ (a chart can only read files inside itself).
CHART_CRDS = Path("charts/kube-sessions/files/crds")


def _image_map_item(text: str) -> tuple[str, str]:
    image, sep, command = text.partition("=")
    if not sep or not image or not command:
        raise argparse.ArgumentTypeError(f"--image-map wants IMAGE=COMMAND, got {text!r}")
    return image, command


N = TypeVar("N", int, float)


def _at_least_zero(cast: Callable[[str], N], what: str) -> Callable[[str], N]:
    """An argparse type: ``cast`` of the text, refused (naming ``what``) when not a number >= 0."""

    def parse(text: str) -> N:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants {what} >= 0, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"wants {what} >= 0, got {value}")
        return value

    return parse


_positive_int = _at_least_zero(int, "a whole number")
_seconds = _at_least_zero(float, "a number of seconds")


# Kubernetes refuses a Session whose annotations pass 256 KiB in all: room left for the others.
OUTCOME_BYTES_MAX = 200 * 1024


def _outcome_bytes(text: str) -> int:
    value = _positive_int(text)
    if value > OUTCOME_BYTES_MAX:
        raise argparse.ArgumentTypeError(f"wants 0..{OUTCOME_BYTES_MAX} bytes, got {value}")
    return value


def _cors_origin(text: str) -> str:
    from kubesessions.gateway.cors import check_origin  # the gateway's modules load only for it

    try:
        return check_origin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless it has none to show (a flag, an
    unset option) or its help already says it in words (``default: ...``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default:" in text:
            return text
        return super()._get_help_string(action) or text


# Pods are reached through their Service or pod IP, so servers in them listen on every interface.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
STATE_DIR_HELP = "the cluster's state directory (default: $KUBESESSIONS_LOCALCLUSTER_DIR, else .localcluster)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubesessions", description=__doc__, formatter_class=_DefaultsFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_parser(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, formatter_class=_DefaultsFormatter)

    lc = add_parser("localcluster", help="a real control plane on loopback, for development and tests")
    lc_sub = lc.add_subparsers(dest="action", required=True)
    for action, text in (
        ("up", "start etcd, the control plane and the process node; wait until ready"),
        ("down", "stop exactly the processes `up` started"),
        ("status", "print the cluster's state as JSON"),
        ("env", "print `export KUBECONFIG=...` (and PATH for kubectl/helm)"),
    ):
        p = lc_sub.add_parser(action, help=text, formatter_class=_DefaultsFormatter)
        p.add_argument("--state-dir", type=Path, default=None, help=STATE_DIR_HELP)
        if action == "up":
            p.add_argument(
                "--node",
                choices=NODE_KINDS,
                default="process",
                help="process (default): pods run as local processes; kubelet: a real kubelet, "
                "containerd and runc (needs root and `make node-packages`)",
            )
            p.add_argument("--gpus", type=_positive_int, default=2, help="nvidia.com/gpu on the node")
            p.add_argument(
                "--gpu-product",
                default="NVIDIA-A100-SXM4-80GB",
                help="the node's nvidia.com/gpu.product label",
            )
            p.add_argument(
                "--gpu-taint", action="store_true", help="taint the node nvidia.com/gpu:NoSchedule"
            )
            p.add_argument("--cpu", default="64", help="virtual cpu capacity")
            p.add_argument("--memory", default="256Gi", help="virtual memory capacity")
            p.add_argument("--pods", type=_positive_int, default=250, help="pods the node accepts")
            p.add_argument(
                "--image-map",
                type=_image_map_item,
                action="append",
                default=[],
                metavar="IMAGE=COMMAND",
                help="run IMAGE (without tag) as COMMAND when a container sets none (repeatable; default: "
                + ", ".join(f"{image}={command}" for image, command in DEFAULT_IMAGE_MAP.items())
                + ")",
            )
    lc_bin = lc_sub.add_parser(
        "binaries",
        help="find or build the Kubernetes binaries; print their paths",
        formatter_class=_DefaultsFormatter,
    )
    lc_bin.add_argument(
        "--node",
        choices=NODE_KINDS,
        default="process",
        help="also the kubelet, kube-proxy and kube-router (NetworkPolicy), which only the kubelet node runs",
    )

    op = add_parser("operator", help="run the kopf operator that reconciles Sessions")
    op.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    op.add_argument("--retention", type=_seconds, default=600.0, help="seconds a finished Session is kept")
    op.add_argument(
        "--termination-grace", type=_positive_int, default=30, help="worker pods' grace period on deletion"
    )
    op.add_argument(
        "--unreachable-limit",
        type=_positive_int,
        default=5,
        help="failed worker status calls in a row before the session fails as WorkerLost",
    )
    op.add_argument(
        "--idle-grace",
        type=_positive_int,
        default=60,
        help="a worker idle past its timeout + this many seconds exits by itself",
    )
    op.add_argument(
        "--workers",
        type=_positive_int,
        default=32,
        help="Sessions reconciled at once (each waits on the API, not the CPU)",
    )
    op.add_argument(
        "--no-network-policy",
        action="store_true",
        help="keep no NetworkPolicy for workers (default: one in each namespace with sessions)",
    )
    op.add_argument(
        "--peer-namespace",
        default=None,
        help="namespace of the gateway and operator pods the workers' policy lets in "
        "(default: the operator's own in a pod, else kube-sessions)",
    )
    op.add_argument(
        "--peer-instance",
        default=None,
        help="their app.kubernetes.io/instance label, the Helm release (default: any)",
    )
    op.add_argument(
        "--client-label",
        type=label_arg,
        default="kubesessions.io/client=true",  # argparse parses a string default with `type`
        metavar="KEY=VALUE",
        help="pods with this label may call workers in their namespace",
    )
    op.add_argument(
        "--worker-egress",
        type=egress_rules_arg,
        default=[],
        help="JSON list of NetworkPolicy egress rules for workers beyond DNS (default: none)",
    )
    op.add_argument(
        "--metrics-host", default=ALL_INTERFACES, help="address for /metrics (0.0.0.0: every interface)"
    )
    op.add_argument(
        "--metrics-port",
        type=_positive_int,
        default=None,
        help="serve /metrics and /healthz here (default: not served)",
    )
    op.add_argument(
        "--leader-elect",
        action="store_true",
        help="act only while holding the Lease (for several replicas; the chart turns it on)",
    )
    op.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease ($POD_NAMESPACE when set)",
    )
    op.add_argument("--lease-name", default="kube-sessions-operator", help="the Lease's name")
    op.add_argument(
        "--lease-duration", type=_seconds, default=15.0, help="seconds a standby waits before taking over"
    )
    op.add_argument(
        "--renew-deadline",
        type=_seconds,
        default=10.0,
        help="seconds the leader tries to renew before it stops",
    )
    op.add_argument("--retry-period", type=_seconds, default=2.0, help="seconds between Lease renewals/tries")

    gw = add_parser("gateway", help="serve the sessions API over HTTP (stateless; run N replicas)")
    gw.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="serve (and watch) this namespace (repeatable; default: all namespaces)",
    )
    gw.add_argument(
        "--default-namespace",
        default=None,
        help="namespace of requests that name none (default: the first --namespace, else default)",
    )
    gw.add_argument(
        "--auth",
        choices=("kubernetes", "none"),
        default="kubernetes",
        help="kubernetes: TokenReview + SubjectAccessReview; none: local development only",
    )
    gw.add_argument("--host", default=ALL_INTERFACES, help="address to listen on (0.0.0.0: every interface)")
    gw.add_argument("--port", type=_positive_int, default=8000, help="port to listen on")
    gw.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="serving processes sharing the port, each with its own watches",
    )
    gw.add_argument(
        "--max-body-bytes", type=_positive_int, default=8 * 1024 * 1024, help="largest request body accepted"
    )
    gw.add_argument(
        "--start-timeout",
        type=_seconds,
        default=120.0,
        help="seconds a new session may take to become Ready",
    )
    gw.add_argument(
        "--call-timeout",
        type=_seconds,
        default=660.0,
        help="seconds without a byte from the worker before 504",
    )
    gw.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        type=_cors_origin,
        help="let browser pages from this origin (scheme://host[:port], or * for any) call the API "
        "(repeatable; default: none, no cross-origin calls)",
    )
    gw.add_argument(
        "--one-shot-outcome-bytes",
        type=_outcome_bytes,
        default=16 * 1024,
        help="largest outcome of a one-shot call kept on its Session for retries and other replicas "
        f"(0..{OUTCOME_BYTES_MAX}; a larger output is left out and its retry is CALL_ALREADY_RAN)",
    )
    gw.add_argument(
        "--task-bytes",
        type=_positive_int,
        default=64 * 1024 * 1024,
        help="bytes of finished inference.sh tasks (input and output) a replica keeps; the oldest go first",
    )

    crds = add_parser("crds", help="print the CRDs generated from the models")
    mode = crds.add_mutually_exclusive_group()
    mode.add_argument(
        "--apply",
        action="store_true",
        help="apply them to the cluster (KUBECONFIG) and wait until the API server serves them",
    )
    mode.add_argument("--write", action="store_true", help="write them into --dir")
    mode.add_argument(
        "--check", action="store_true", help="fail, with a diff, if --dir differs from the models"
    )
    crds.add_argument("--dir", type=Path, default=Path("crds"), help="the CRD files' directory")
    crds.add_argument(
        "--timeout", type=_seconds, default=60.0, help="seconds --apply waits for them to be served"
    )

    demo = add_parser(
        "demo", help="the local cluster, operator and gateway, and sessions used through the client"
    )
    demo.add_argument("--keep", action="store_true", help="leave it all running and print how to reach it")
    demo.add_argument("--state-dir", type=Path, default=None, help=STATE_DIR_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.setup()
    if args.command in ("operator", "gateway"):
        from kubesessions.kube import slimimports

        slimimports.install()  # before kopf or the Kubernetes client is imported
        require_kube_config(args.command)
    if args.command == "localcluster":
        _localcluster(args)
    elif args.command == "operator":
        from kubesessions.control.decide.children import PolicyPeers
        from kubesessions.control.process import run
        from kubesessions.control.settings import OperatorSettings

        peers = PolicyPeers(
            namespace=args.peer_namespace or own_namespace(),
            instance=args.peer_instance,
            client_label=args.client_label,
            egress=args.worker_egress,
        )

        run(
            OperatorSettings(
                namespaces=args.namespace,
                retention=args.retention,
                termination_grace=args.termination_grace,
                unreachable_limit=max(1, args.unreachable_limit),
                idle_grace=args.idle_grace,
                workers=args.workers,
                network_policy=None if args.no_network_policy else peers,
                token_key=token_key(os.environ, Path.home()),
            ),
            lease=lease_settings(args) if args.leader_elect else None,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    elif args.command == "gateway":
        from kubesessions.gateway.app import run as run_gateway
        from kubesessions.gateway.sessions import GatewaySettings

        run_gateway(
            GatewaySettings(
                namespaces=args.namespace,
                default_namespace=args.default_namespace or (args.namespace or ["default"])[0],
                auth=args.auth,
                host=args.host,
                port=args.port,
                processes=args.processes,
                max_body_bytes=args.max_body_bytes,
                start_timeout=args.start_timeout,
                call_timeout=args.call_timeout,
                token_key=token_key(os.environ, Path.home()),
                cors_origins=args.cors_origin,
                one_shot_outcome_bytes=args.one_shot_outcome_bytes,
                task_bytes=args.task_bytes,
            )
        )
    elif args.command == "crds":
        _crds(args)
    elif args.command == "demo":
        from kubesessions.cli.demo import run_demo

        sys.exit(run_demo(keep=args.keep, state_dir=args.state_dir))


def _crds(args: argparse.Namespace) -> None:
    from kubesessions.api import crds

    dirs = [args.dir, *([CHART_CRDS] if args.dir == Path("crds") and CHART_CRDS.parent.is_dir() else [])]
    if args.write:
        for path in (p for d in dirs for p in crds.write(d)):
            print(f"wrote {path}")
    elif args.check:
        diffs = [diff for d in dirs for diff in crds.check(d)]
        if diffs:
            print("".join(diffs), end="")
            print(f"{args.dir} differs from the models: run `kubesessions crds --write`", file=sys.stderr)
            sys.exit(1)
        print(f"{args.dir} matches the models")
    elif args.apply:
        _apply_crds(args.timeout)
    else:
        print("---\n".join(crds.rendered().values()), end="")


def _apply_crds(timeout: float) -> None:
    require_kube_config("crds --apply")
    from kubernetes_asyncio.client.exceptions import ApiException

    from kubesessions.kube.crdinstall import apply_crds

    try:
        names = asyncio.run(apply_crds(timeout))
    except TimeoutError as err:
        sys.exit(f"kubesessions crds --apply: {err}")
    except ApiException as err:
        sys.exit(f"kubesessions crds --apply: the API server answered {err.status}: {err.reason}")
    except OSError as err:
        sys.exit(f"kubesessions crds --apply: cannot reach the API server: {err}")
    for name in names:
        print(f"customresourcedefinition.apiextensions.k8s.io/{name} applied and established")


def _localcluster(args: argparse.Namespace) -> None:
    from kubesessions.localcluster import binaries, cluster
    from kubesessions.localcluster.images import ImageError
    from kubesessions.localcluster.kubeletnode import NodeError
    from kubesessions.localcluster.nodeconfig import NodeConfig

    if args.action == "binaries":
        binaries.main(
            binaries.CONTROL_PLANE
            + binaries.TOOLS
            + binaries.STATE_STORE
            + (binaries.KUBELET_NODE if args.node == "kubelet" else ())
        )
        return
    state_dir = cluster.StateDir(args.state_dir or cluster.default_state_dir())
    try:
        if args.action == "up":
            node = NodeConfig(
                kind=args.node,
                gpus=args.gpus,
                gpu_product=args.gpu_product,
                gpu_taint=args.gpu_taint,
                cpu=args.cpu,
                memory=args.memory,
                pods=args.pods,
            )
            node.image_map.update(dict(args.image_map))
            cluster.up(state_dir, node)
            print("\n".join(cluster.env_lines(state_dir)))
        elif args.action == "down":
            cluster.down(state_dir)
        elif args.action == "status":
            print(json.dumps(cluster.status(state_dir), indent=2))
        elif args.action == "env":
            print("\n".join(cluster.env_lines(state_dir)))
    except (cluster.ClusterError, binaries.BinaryError, NodeError, ImageError) as exc:
        print(f"kubesessions localcluster {args.action}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
