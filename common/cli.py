"""What every command-line script shares: one-line errors and exit status 2, the data flags,
and argument types that refuse nonsense before anything is written."""
from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import zipfile
from typing import Callable

from common import checks

# Scripts import this before TensorFlow: keep TensorFlow's C++ start-up chatter out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASETS = ("tiny-imagenet", "cifar10", "cifar100", "svhn", "digits")

# The errors a user causes (a wrong path, an unknown name, a malformed file, a full disk); anything
# else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, KeyError,
               zipfile.BadZipFile)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose refusal is one line, ``prog: error: message``, and exit status 2, like every
    other user error (argparse prints its whole usage block first; ``--help`` still shows it).

    A value like ``-1/255`` or ``-2e-3`` is read as a value, not as an unknown option, so its own type
    check says what is wrong with it ("must be in [0, 1]") instead of "expected one argument". Sub-command
    parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?(/\d+)?$", re.IGNORECASE)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on the device{': ' + error.filename if error.filename else ''}"
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def print_error(message: str) -> None:
    """One line on stderr, ``prog: error: message``, in the form argparse's own refusals take."""
    print(f"{os.path.basename(sys.argv[0]) or 'python'}: error: {message}", file=sys.stderr, flush=True)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a user error prints one line to stderr and exits with status 2."""
    try:
        status = main(argv)
    except USER_ERRORS as error:
        print_error(_message(error))
        return 2
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise
        print_error(_message(error))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


def _argparse_type(check: Callable, name: str) -> Callable[[str], object]:
    """An argparse ``type`` from a ``common.checks`` function: its ValueError becomes argparse's message."""
    def parse(text: str):
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parse.__name__ = name
    return parse


pixel_value = _argparse_type(checks.pixel_value, "pixel value")
positive_int = _argparse_type(lambda text: checks.positive_int("value", checks.parse_int(text)), "positive integer")
non_negative_int = _argparse_type(lambda text: checks.non_negative_int("value", checks.parse_int(text)),
                                  "non-negative integer")
non_negative_float = _argparse_type(lambda text: checks.real_in_range("value", checks.parse_float(text), 0.0,
                                                                     float("inf"), high_open=True), "number >= 0")
positive_float = _argparse_type(lambda text: checks.positive_real("value", checks.parse_float(text)), "positive number")
finite_float = _argparse_type(lambda text: checks.finite_real("value", checks.parse_float(text)), "number")


def fraction(low_open: bool = True) -> Callable[[str], float]:
    """A real in (0, 1] (``low_open``) or [0, 1]."""
    return _argparse_type(lambda text: checks.real_in_range("value", checks.parse_float(text), 0.0, 1.0,
                                                            low_open=low_open), "fraction")


def add_data_arguments(parser: argparse.ArgumentParser, *, defaults_from: str | None = None) -> argparse._ArgumentGroup:
    """The data flags every script takes, declared once. ``defaults_from`` (e.g. "the run's") says where
    a flag left out comes from; without it the dataset defaults to tiny-imagenet."""
    group = parser.add_argument_group("data")
    default_note = f" (default: {defaults_from})" if defaults_from else ""
    group.add_argument("--data", metavar="PATH",
                       help="a local copy: Tiny ImageNet folder, official zip or folder of zip parts (the default "
                            "dataset with --data); with --dataset cifar10/cifar100, the extracted python-version "
                            "folder" + default_note)
    group.add_argument("--dataset", choices=DATASETS, default=None if defaults_from else "tiny-imagenet",
                       help="a named dataset (default: " + (defaults_from or "tiny-imagenet; digits works offline")
                       + ")")
    group.add_argument("--classes", type=positive_int, metavar="N", help="keep the first N classes" + default_note)
    group.add_argument("--per-class", type=positive_int, metavar="K",
                       help="keep the first K training images per class" + default_note)
    return group


def dataset_of(args, fallback: str | None = "tiny-imagenet") -> str | None:
    """The dataset the data flags name: --dataset if given; else --data is a Tiny ImageNet copy."""
    return args.dataset or ("tiny-imagenet" if args.data else fallback)
