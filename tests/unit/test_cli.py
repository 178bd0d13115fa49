from __future__ import annotations

import pytest

from kubesessions.cli import build_parser

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
