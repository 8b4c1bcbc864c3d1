"""The progress display: one tqdm bar on stderr, or plain log lines; rate and ETA by the plan's
estimated core seconds (a clock is injected, so the numbers are exact)."""

from __future__ import annotations

import logging

from sweep.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bar_shows_done_total_rate_eta_and_failures(capsys):
    clock = Clock()
    p = Progress(total=10, initial=2, mode="bar", work=8.0, clock=clock)
    clock.now += 2
    p.update(6, 0, work=4.0)
    clock.now += 1
    p.update(9, 1, work=7.0)
    p.close()
    err = capsys.readouterr().err
    assert "points" in err and "9/10" in err and "failed=1" in err
    # 7 estimated core seconds in 3 s; 1 left: the rate and ETA of the work, not the points
    assert "2.33 core s/s, ETA 0 s, failed=1" in err


def test_log_mode_writes_lines_not_a_bar(capsys, caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="sweep.progress"):
        p = Progress(total=4, initial=0, mode="log", work=4.0, clock=clock)
        clock.now += 3
        p.update(3, 1, work=4.0)
        p.close()
    assert capsys.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "4 of 4 points to run, estimated 4 core seconds"
    assert lines[-1] == "points 3/4 (75%), 1.33 core s/s, ETA 0 s, 1 failed"


def test_eta_weighs_points_by_their_estimated_cost():
    # The aim7-full start: the first big simulations finish, thousands of tiny points remain.
    # By points the ETA was 434,826 s; by estimated core seconds it is what the work needs.
    clock = Clock()
    p = Progress(total=100_000, initial=0, mode="log", work=1000.0, clock=clock)
    assert p.line() == "points 0/100000 (0%), 0 core s/s, ETA ?, 0 failed"
    clock.now += 200
    p.update(14, 0, work=400.0)  # 14 big points, 400 of the 1,000 estimated core seconds
    assert p.eta() == 300.0  # 600 s of work left at 2 core s/s
    assert p.line() == "points 14/100000 (0%), 2 core s/s, ETA 0:05:00, 0 failed"
    clock.now += 300
    p.update(100_000, 0, work=1000.0)
    assert p.eta() == 0.0


def test_a_resumed_sweep_rates_only_the_work_of_this_run():
    clock = Clock()
    p = Progress(total=10, initial=6, mode="log", work=8.0, clock=clock)  # 4 points left
    clock.now += 4
    p.update(8, 0, work=2.0)
    assert p.rate() == 0.5 and p.eta() == 12.0


def test_without_estimates_every_point_weighs_one():
    clock = Clock()
    p = Progress(total=10, initial=0, mode="log", clock=clock)
    clock.now += 5
    p.update(5, 0)
    assert p.rate() == 1.0 and p.eta() == 5.0
