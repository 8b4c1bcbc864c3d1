"""Timing configs of `python -m sweep`, selected with +timing=NAME (written by sweep.calibrate;
installed as sweep.conf.timing)."""
