from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesessions.cli.commands import build_parser
from kubesessions.cli.runconfig import kube_config_problem
from kubesessions.localcluster import cluster

pytestmark = pytest.mark.unit


def test_operator_flags_parse() -> None:
    args = build_parser().parse_args(
        [
            "operator",
            "--namespace",
            "a",
            "--namespace",
            "b",
            "--retention",
            "5",
            "--idle-grace",
            "2",
            "--unreachable-limit",
            "3",
            "--metrics-port",
            "9000",
        ]
    )
    assert (args.namespace, args.retention, args.idle_grace, args.unreachable_limit, args.metrics_port) == (
        ["a", "b"],
        5.0,
        2,
        3,
        9000,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["operator", "--retention", "-1"], "seconds >= 0"),
        (["operator", "--idle-grace", "x"], "whole number"),
        (["localcluster", "up", "--gpus", "-2"], "whole number >= 0"),
        (["localcluster", "up", "--image-map", "noequals"], "IMAGE=COMMAND"),
    ],
)
def test_bad_flags_are_refused_with_the_rule(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself included), by its prog name."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _subparsers(child)


def _rendered_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One option's entry in ``--help``, as the parser's formatter writes it."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def test_every_option_help_shows_its_default() -> None:
    checked = []
    for prog, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:  # positionals, -h, on/off flags
                continue
            shown = f"(default: {action.default})" if action.default not in (None, []) else "default:"
            rendered = _rendered_help(parser, action)
            assert shown in rendered, f"{prog}: the help does not say the default: {rendered!r}"
            checked.append(f"{prog} {action.option_strings[-1]}")
    assert {"kubesessions gateway --host", "kubesessions localcluster up --gpus"} <= set(checked)
    assert "kubesessions operator --termination-grace" in checked and len(checked) > 25, checked


def test_gateway_host_default_is_said() -> None:
    gateway = dict(_subparsers(build_parser()))["kubesessions gateway"]
    assert "(default: 0.0.0.0)" in " ".join(gateway.format_help().split())


@pytest.mark.parametrize("command", ["operator", "gateway"])
def test_no_kubeconfig_says_how_to_get_one_and_exits(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "kubesessions.cli.commands",
                command,
                "--port" if command == "gateway" else "--workers",
                "1",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`kubesessions {command}` without a kubeconfig still runs after 30 s: {exc.stderr!r}")
    assert proc.returncode == 2, proc.stderr
    assert 'eval "$(kubesessions localcluster env)"' in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3, proc.stderr


def test_kube_config_problem(tmp_path: Path) -> None:
    token = tmp_path / "token"
    home = tmp_path / "home"
    assert "KUBECONFIG is not set" in (kube_config_problem({}, home, token) or "")
    assert "names no file" in (kube_config_problem({"KUBECONFIG": "/nope:/neither"}, home, token) or "")
    (tmp_path / "kc").write_text("")
    assert kube_config_problem({"KUBECONFIG": f"/nope:{tmp_path / 'kc'}"}, home, token) is None
    token.write_text("t")
    assert kube_config_problem({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, home, token) is None
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("")
    assert kube_config_problem({}, home, tmp_path / "none") is None


def test_status_shows_ports_and_commands_keep_the_state_dir(tmp_path: Path) -> None:
    state_dir = cluster.StateDir(tmp_path / "custom")
    state_dir.root.mkdir()
    state_dir.save(
        cluster.ClusterState(server="https://127.0.0.1:1234", ports={"apiserver": 1234, "etcd": 5})
    )
    assert cluster.status(state_dir)["ports"] == {"apiserver": 1234, "etcd": 5}
    assert cluster.command(state_dir, "env") == f"kubesessions localcluster env --state-dir {state_dir.root}"
    default = cluster.StateDir(cluster.default_state_dir())
    assert cluster.command(default, "down") == "kubesessions localcluster down"
    with pytest.raises(cluster.ClusterError, match=f"localcluster up --state-dir {state_dir.root}"):
        cluster.env_lines(state_dir)
