"""Errors a user can act on, and the wrapper that turns them into one-line messages."""

from __future__ import annotations

import sys
from collections.abc import Callable


class NerfError(Exception):
    """A problem with the user's input: its message names the file or key and what was expected."""


class ConfigError(NerfError):
    """A bad ``params.yaml`` key or value."""


class DataError(NerfError):
    """A missing, unreadable or malformed data set file, or a failed download."""


class TrainingError(NerfError):
    """Training cannot go on (e.g. the loss became non-finite)."""


def run_stage(main: Callable[[], None]) -> None:
    """Runs a stage's ``main``; a :class:`NerfError` becomes ``error: ...`` on stderr, exit 1."""
    try:
        main()
    except NerfError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
