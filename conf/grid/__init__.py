"""Grids of `python -m sweep`, selected with +grid=NAME (installed as sweep.conf.grid)."""
