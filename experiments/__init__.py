"""Experiments from the seed reports, each one command (``python -m experiments.NAME SUBCOMMAND``).

They train through the project's trainer and write their tables and figures under ``results/``.
"""
