"""One error vocabulary for bad flags and inputs, formatted in one place.

Every check in the library raises one of these; every command prints ``str(error)`` as its one
line (``cli.fail``), and Python callers catch ``ValueError`` or the class. Importable without
Keras or TensorFlow.

* ``FlagError(flag, message)``: a setting is wrong; ``--flag: message``. The flag is the
  command-line name of the setting, which is also the config field and the keyword argument.
* ``InputError(message)``: an input (a file, an image, a model) cannot be used; the message
  starts with what it is (``photo.jpg: ...``), in one line.

The checks shared by every config (``check_positive``, ``check_choice``, ``check_finite``) live
here too, so a wrong number or name reads the same whichever command is given it.
"""

from __future__ import annotations

import math

# Counts and sizes beyond this reach no tensor (int32 indices).
MAX_INT = 2 ** 31 - 1


class KPerceptualError(ValueError):
    """A bad flag or input; the message is the one line a user sees."""


class FlagError(KPerceptualError):
    """A flag's (setting's) value is wrong: ``--flag: message``; ``field`` names the flag."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"--{flag}: {message}")
        self.field = flag
        self.message = message


class InputError(KPerceptualError):
    """An input cannot be used; the message starts with which one and says why, in one line."""


def check_positive(config, *fields) -> None:
    """Each ``config.<field>`` is a positive, finite number that fits an int32 index."""
    for field in fields:
        value = getattr(config, field)
        if not value > 0:
            raise FlagError(field, f"must be positive, got {value}")
        if isinstance(value, int) and value > MAX_INT:
            raise FlagError(field, f"must be at most {MAX_INT}, got {value}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FlagError(field, f"must be finite, got {value}")


def check_finite(config, *fields) -> None:
    """Each ``config.<field>`` is a finite number >= 0 (a loss weight, a sigma)."""
    for field in fields:
        value = getattr(config, field)
        if not math.isfinite(value) or value < 0:
            raise FlagError(field, f"must be a finite number >= 0, got {value}")


def check_choice(config, field: str, allowed) -> None:
    """``config.<field>`` is one of ``allowed``."""
    value = getattr(config, field)
    if value not in allowed:
        raise FlagError(field, f"unknown value {value!r}; expected one of {', '.join(allowed)}")
