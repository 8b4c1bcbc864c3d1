"""The progress display: one tqdm bar on stderr, or plain log lines."""

from __future__ import annotations

import logging

from sweep.progress import Progress


def test_bar_shows_done_total_rate_and_failures(capsys):
    p = Progress(total=10, initial=2, mode="bar")
    p.update(6, 0)
    p.update(9, 1)
    p.close()
    err = capsys.readouterr().err
    assert "points" in err and "9/10" in err and "failed=1" in err
    assert "pt/s" in err  # the rate; tqdm shows the ETA beside it while running


def test_log_mode_writes_lines_not_a_bar(capsys, caplog):
    with caplog.at_level(logging.INFO, logger="sweep.progress"):
        p = Progress(total=4, initial=0, mode="log")
        p.update(3, 1)
        p.close()
    assert capsys.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "4 of 4 points to run"
    assert lines[-1].startswith("points 3/4 (75%), ") and lines[-1].endswith(", 1 failed")
    assert "ETA 0 s" in lines[-1]
