"""The `kubesessions` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import logs
from .localcluster.nodeconfig import NODE_KINDS

# The Helm chart carries a copy of crds/ (a chart can only read files inside itself).
CHART_CRDS = Path("charts/kube-sessions/files/crds")


def _image_map_item(text: str) -> tuple[str, str]:
    image, sep, command = text.partition("=")
    if not sep or not image or not command:
        raise argparse.ArgumentTypeError(f"--image-map wants IMAGE=COMMAND, got {text!r}")
    return image, command


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"wants a whole number >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a number of seconds >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"wants a number of seconds >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubesessions", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    lc = sub.add_parser("localcluster", help="a real control plane on loopback, for development and tests")
    lc_sub = lc.add_subparsers(dest="action", required=True)
    for action, text in (
        ("up", "start etcd, the control plane and the process node; wait until ready"),
        ("down", "stop exactly the processes `up` started"),
        ("status", "print the cluster's state as JSON"),
        ("env", "print `export KUBECONFIG=...` (and PATH for kubectl/helm)"),
    ):
        p = lc_sub.add_parser(action, help=text)
        p.add_argument("--state-dir", type=Path, default=None, help="default: .localcluster/")
        if action == "up":
            p.add_argument(
                "--node",
                choices=NODE_KINDS,
                default="process",
                help="process (default): pods run as local processes; kubelet: a real kubelet, "
                "containerd and runc (needs root and `make node-packages`)",
            )
            p.add_argument("--gpus", type=_positive_int, default=2, help="nvidia.com/gpu on the node")
            p.add_argument("--gpu-product", default="NVIDIA-A100-SXM4-80GB")
            p.add_argument(
                "--gpu-taint", action="store_true", help="taint the node nvidia.com/gpu:NoSchedule"
            )
            p.add_argument("--cpu", default="64", help="virtual cpu capacity")
            p.add_argument("--memory", default="256Gi", help="virtual memory capacity")
            p.add_argument("--pods", type=_positive_int, default=250)
            p.add_argument(
                "--image-map",
                type=_image_map_item,
                action="append",
                default=[],
                metavar="IMAGE=COMMAND",
                help="run IMAGE (without tag) as COMMAND when a container sets none",
            )
    lc_sub.add_parser("binaries", help="find or build the Kubernetes binaries; print their paths")

    op = sub.add_parser("operator", help="run the kopf operator that reconciles Sessions")
    op.add_argument(
        "--namespace", action="append", default=[], help="watch this namespace (repeatable; default: all)"
    )
    op.add_argument(
        "--retention", type=_seconds, default=600.0, help="seconds a finished Session is kept (default 600)"
    )
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
        help="a worker idle past its timeout + this many seconds exits by itself (default 60)",
    )
    op.add_argument(
        "--workers",
        type=_positive_int,
        default=32,
        help="Sessions reconciled at once (default 32; each waits on the API, not the CPU)",
    )
    op.add_argument("--metrics-host", default="0.0.0.0", help="address for /metrics (default all)")  # noqa: S104
    op.add_argument(
        "--metrics-port", type=_positive_int, default=None, help="serve /metrics and /healthz here"
    )

    gw = sub.add_parser("gateway", help="serve the sessions API over HTTP (stateless; run N replicas)")
    gw.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="serve (and watch) this namespace (repeatable; default: all)",
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
    gw.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a Service sends callers here
    gw.add_argument("--port", type=_positive_int, default=8000)
    gw.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="serving processes sharing the port, each with its own watches (default 1)",
    )
    gw.add_argument("--max-body-bytes", type=_positive_int, default=8 * 1024 * 1024)
    gw.add_argument(
        "--start-timeout",
        type=_seconds,
        default=120.0,
        help="seconds a new session may take to become Ready (default 120)",
    )
    gw.add_argument(
        "--call-timeout",
        type=_seconds,
        default=660.0,
        help="seconds without a byte from the worker before 504 (default 660)",
    )

    crds = sub.add_parser("crds", help="print the CRDs generated from the models")
    mode = crds.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write them into --dir")
    mode.add_argument(
        "--check", action="store_true", help="fail, with a diff, if --dir differs from the models"
    )
    crds.add_argument("--dir", type=Path, default=Path("crds"), help="default: crds/")

    demo = sub.add_parser(
        "demo", help="the local cluster, operator and gateway, and sessions used through the client"
    )
    demo.add_argument("--keep", action="store_true", help="leave it all running and print how to reach it")
    demo.add_argument("--state-dir", type=Path, default=None, help="default: .localcluster/")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.setup()
    if args.command == "localcluster":
        _localcluster(args)
    elif args.command == "operator":
        from .controller import OperatorSettings
        from .handlers import run

        run(
            OperatorSettings(
                namespaces=args.namespace,
                retention=args.retention,
                termination_grace=args.termination_grace,
                unreachable_limit=max(1, args.unreachable_limit),
                idle_grace=args.idle_grace,
                workers=args.workers,
            ),
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    elif args.command == "gateway":
        from .gateway.app import run as run_gateway
        from .gateway.sessions import GatewaySettings

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
            )
        )
    elif args.command == "crds":
        _crds(args)
    elif args.command == "demo":
        from .demo import run_demo

        sys.exit(run_demo(keep=args.keep, state_dir=args.state_dir))


def _crds(args: argparse.Namespace) -> None:
    from . import crds

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
    else:
        print("---\n".join(crds.rendered().values()), end="")


def _localcluster(args: argparse.Namespace) -> None:
    from .localcluster import binaries, cluster
    from .localcluster.images import ImageError
    from .localcluster.kubeletnode import NodeError
    from .localcluster.nodeconfig import NodeConfig

    if args.action == "binaries":
        binaries.main()
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
            print(f"export KUBECONFIG={state_dir.kubeconfig}")
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
