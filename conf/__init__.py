"""Hydra configs of `python -m sweep` (installed as the package sweep.conf)."""
