"""Shared plumbing for the ``python -m kperceptual.<verb>`` entry points (absl)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported


def fail(program: str, message: str, status: int = 2):
    """Prints one line ``program: message`` to stderr and exits with ``status``."""
    print(f"{program}: {message}", file=sys.stderr)
    sys.exit(status)


def flags_parser(program: str):
    """An absl ``flags_parser`` that turns flag errors into one line and exit status 2."""
    from absl import flags

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            fail(program, str(e).splitlines()[0])

    return parse
