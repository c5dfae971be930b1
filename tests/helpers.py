"""Helpers shared by several test modules."""
from __future__ import annotations


def cli_status(script, argv: list) -> int:
    """The exit status of ``script.main(argv)`` run as its command line runs it, argparse's refusals included."""
    try:
        return script.run_cli(script.main, argv)
    except SystemExit as exit_:
        return exit_.code
