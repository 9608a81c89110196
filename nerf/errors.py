"""Errors a user can act on, and the wrapper that turns them into one-line messages."""

from __future__ import annotations

import errno
import pickle
import signal
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path


class NerfError(Exception):
    """A problem with the user's input: its message names the file or key and what was expected."""


class ConfigError(NerfError):
    """A bad ``params.yaml`` key or value."""


class DataError(NerfError):
    """A missing, unreadable or malformed data set file, or a failed download."""


class TrainingError(NerfError):
    """Training cannot go on (e.g. the loss became non-finite)."""


# What reading a damaged file may raise: torch.load, np.load and zipfile on truncated or
# foreign bytes, and the lookups into what they return.
UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, zipfile.BadZipFile,
              pickle.UnpicklingError)


def describe(err: BaseException, path: Path | None = None) -> str:
    """``TypeName: first line of its message``: a library's error, quoted inside one of ours.

    Not for ``torch.load(weights_only=True)`` of bytes that are not a checkpoint's: its first
    line advises loading with ``weights_only=False``, which would run any code in the file;
    what it found there comes instead. A first line of several sentences (miniz's runs on for
    400 characters) is cut to its first. With the ``path`` that failed to load: an empty file,
    or one cut short (what ``torch.load`` and ``np.load`` raise when the archive's end is
    missing: EOFError, an ``EINVAL`` OSError, miniz's "central directory"), says so first."""
    text = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) and text.startswith("Weights only load failed"):
        found = text.partition("WeightsUnpickler error:")[2].split()
        return f"UnpicklingError: not a checkpoint's contents ({' '.join(found[:8]) or 'unreadable'})"
    size = _size(path)
    if size == 0:
        return "the file is empty"
    if isinstance(err, OSError) and err.strerror:  # "Invalid argument", not "[Errno 22] ..."
        text = err.strerror
    first = text.splitlines()[0] if text else ""
    if len(first) > 160 and ". " in first:
        first = first.split(". ")[0] + "."
    quoted = f"{type(err).__name__}: {first}" if first else type(err).__name__
    cut_short = (isinstance(err, (EOFError, zipfile.BadZipFile))
                 or (isinstance(err, OSError) and err.errno == errno.EINVAL)
                 or (isinstance(err, RuntimeError) and "central directory" in text))
    if size is not None and cut_short:
        return f"cut short or damaged, {size:,} bytes: {quoted}"
    return quoted


def _size(path: Path | None) -> int | None:
    try:
        return None if path is None else path.stat().st_size
    except OSError:
        return None


class Terminated(BaseException):
    """SIGTERM (``kill``, ``docker stop``, a job scheduler at its time limit), raised where the
    stage is, so that its temporary outputs are removed on the way out, as on Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed: Python's MemoryError, torch's
    OutOfMemoryError (CUDA), or the RuntimeError of torch's CPU allocator."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(err))


def run_stage(main: Callable[[], None]) -> None:
    """Runs a stage's ``main``; a :class:`NerfError` becomes ``error: ...`` on stderr, exit 1,
    and so do an OSError (a full disk, a permission) that no closer code named a file for and
    running out of memory (:func:`out_of_memory`).
    Ctrl-C and SIGTERM stop it with one line, exit 130 and 143, having removed what it had
    half-written. (The stages open their progress bars as contexts, ``with tqdm(...) as bar``,
    so that a bar is closed, its line ended, before that line is printed.)"""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        main()
    except NerfError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or describe(err)}", file=sys.stderr)
        raise SystemExit(1) from None
    except (MemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise  # a bug: its traceback
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: out of memory ({first}); smaller images (video.width, split.image_size), "
              "render.chunk or model, or a machine with more memory", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Terminated:
        print("error: terminated", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
