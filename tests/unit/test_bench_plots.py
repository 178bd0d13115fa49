"""bench/plots.py: the PNG the benchmarks write beside their JSON."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent.parent / "bench"))
import plots
import report

pytestmark = pytest.mark.unit


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_distributions_and_a_timeline_make_one_two_panel_png(tmp_path: Path) -> None:
    samples = {"direct": [0.2, 0.3, 0.25, 1.5], "gateway": [0.5, 0.6, 0.7, 3.0]}
    timeline = {"created": [0.0, 0.1, 0.2], "Ready": [1.0, 1.5, 2.5]}
    one = plots.figure(tmp_path / "one.png", "latency", samples)
    two = plots.figure(tmp_path / "two.png", "burst", samples, timeline)
    assert png_size(one) == (640, 420)
    assert png_size(two) == (1280, 420)  # a panel more, side by side


def test_values_at_or_below_zero_get_a_linear_axis_not_dropped(tmp_path: Path) -> None:
    path = plots.figure(tmp_path / "late.png", "cull lateness", {"late": [-0.2, 0.0, 0.3]}, unit="s")
    assert png_size(path)[0] == 640


def test_nothing_to_draw_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to draw"):
        plots.figure(tmp_path / "empty.png", "empty")
    assert not (tmp_path / "empty.png").exists()


def test_report_writes_the_png_beside_the_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    json_path = report.write("demo", {"x": 1}, [("x", "1", "")], samples={"calls": [1.0, 2.0, 4.0]})
    assert json_path == tmp_path / "demo.json"
    assert png_size(tmp_path / "demo.png") == (640, 420)
    report.write("plain", {"x": 1}, [("x", "1", "")])
    assert not (tmp_path / "plain.png").exists()
