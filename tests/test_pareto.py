"""Pareto front of (accuracy, size)."""

from __future__ import annotations

import csv

from nasq.pareto import pareto_front, plot_front, write_front_csv


def test_front_by_hand() -> None:
    pts = [(0.90, 4.0), (0.85, 2.0), (0.80, 3.0), (0.95, 8.0), (0.85, 2.5), (0.70, 1.0), (0.95, 9.0)]
    assert pareto_front(pts) == [5, 1, 0, 3]


def test_front_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([(0.5, 1.0), (0.5, 1.0)]) == [0, 1]  # duplicates both kept
    assert pareto_front([(float("nan"), 1.0), (0.2, 5.0)]) == [1]
    assert pareto_front([(0.9, 1.0), (0.8, 1.0)]) == [0]  # same size, lower accuracy dominated


def test_csv_and_png(tmp_path) -> None:
    rows = [
        {"genome": "a", "val_acc": 0.9, "size_mb": 2.0},
        {"genome": "b", "val_acc": 0.8, "size_mb": 3.0},
        {"genome": "c", "val_acc": 0.5, "size_mb": 1.0},
    ]
    front = write_front_csv(rows, tmp_path / "front.csv")
    assert [r["genome"] for r in front] == ["c", "a"]
    with open(tmp_path / "front.csv") as f:
        assert [r["genome"] for r in csv.DictReader(f)] == ["c", "a"]
    png = plot_front(rows, tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
