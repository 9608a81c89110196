"""Files: atomic writes (an output appears complete or not at all, and a failure keeps the
old one) and content digests."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import torch

from nerf.errors import DataError, describe


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _left_by_dead(path: Path, kind: str) -> list[Path]:
    """Siblings ``.<name>.<kind>-<pid>[-...]`` of ``path`` whose process no longer runs."""
    prefix = f".{path.name}.{kind}-"
    found = []
    for sibling in path.parent.glob(prefix + "*"):
        pid = sibling.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(sibling)
    return found


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _temp_prefix(path: Path) -> str:
    """Temporary siblings of ``path`` are named ``.<name>.tmp-<pid>-<random>``; those of
    processes that no longer run (killed mid-write) are removed when ``path`` is next written."""
    for stale in _left_by_dead(path, "tmp"):
        _remove(stale)
    return f".{path.name}.tmp-{os.getpid()}-"


def _recover(path: Path) -> None:
    """A process killed between :func:`atomic_dir`'s two renames leaves the previous output
    as ``.<name>.old-<pid>`` and nothing at ``path``: put it back (or, where ``path`` is
    there, drop it)."""
    for old in _left_by_dead(path, "old"):
        if path.exists() or path.is_symlink():
            _remove(old)
        else:
            os.replace(old, path)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while making or replacing ``path`` (a full disk, a read-only folder, a
    folder where a file goes) becomes a one-line :class:`DataError` naming ``path``, not its
    temporary sibling."""
    try:
        yield
    except OSError as err:
        raise DataError(f"{path}: cannot write it ({err.strerror or describe(err)})") from err


@contextlib.contextmanager
def atomic_dir(path: str | Path, holds: Collection[str] | None = None) -> Iterator[Path]:
    """Yields a fresh temporary folder beside ``path``; on success it replaces ``path``.

    If the body raises, the temporary folder is removed and ``path`` is left as it was (also
    after a kill mid-replace: the next call puts the previous output back first). A
    file at ``path`` is refused before any work (a mistyped ``--out cams.json`` must not
    replace the poses file with a folder of renders), and so, where ``holds`` names what
    the writer puts in the folder, is a folder holding anything else (``--out ~/notes`` must
    not delete the notes).
    """
    given = path
    path = Path(path)
    here = Path.cwd()
    if path.resolve() in (here, *here.parents):  # a shell in it would be left in a deleted folder
        raise DataError(f"{given}: is the current folder or holds it; give a folder inside it")
    _recover(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{given}: is a file; expected a folder to write into (or a new name)")
    if holds is not None and path.is_dir():
        foreign = sorted(entry.name for entry in path.iterdir() if entry.name not in holds)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise DataError(f"{given}: holds {shown}, which writing this folder would delete; "
                            f"give a new or empty folder (or one that holds only {', '.join(sorted(holds))})")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
    try:
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        named = _named_after_output(err, tmp, given)
        if named is not None:
            raise named from err
        raise
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    try:
        with _writing(path):
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a write that ran out of room


def _named_after_output(err: BaseException, tmp: Path, path: str | Path) -> DataError | None:
    """A failure to write inside :func:`atomic_dir`'s temporary folder (an OSError of a
    library writing there, or one of our errors naming a file there), as a
    :class:`DataError` naming the output's own path; None for other errors."""
    inside = f"{tmp}{os.sep}"
    if isinstance(err, OSError):
        names = [str(f) for f in (err.filename, err.filename2) if f is not None]
        written = [name for name in names if name.startswith(inside)]
        # A file object's write names no file; a full disk or quota is then the output's.
        if written or (not names and err.errno in _FULL):
            shown = written[-1].replace(str(tmp), str(path), 1) if written else str(path)
            return DataError(f"{shown}: cannot write it ({err.strerror or describe(err)})")
    if isinstance(err, DataError) and inside in str(err):
        return type(err)(str(err).replace(str(tmp), str(path)))
    return None


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yields a temporary file path beside ``path``; on success it is renamed onto ``path``.

    The body only writes the temporary file, so any OSError (a full disk, say) is reported
    as a :class:`DataError` naming ``path``; on any failure the temporary file is removed.
    Nested, several files are written first and renamed together at the end, the
    outermost last: a failure before the renames leaves every old file in place. Write each
    one before opening the next: an error is reported under the innermost open file's name.
    """
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=path.suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
    try:
        with _writing(path):
            yield tmp
            _flush_to_disk(tmp)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _flush_to_disk(path: Path) -> None:
    """fsync: after a power cut, a file system may otherwise have kept the rename onto the
    old file but not yet the new bytes, leaving an empty model or checkpoint in its place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path``, atomically, with the same bytes for the same contents.

    Saved to a path, torch names the archive's inner folder after the file, here the
    temporary file's random name, so every save differed (and DVC saw a new model each
    run); saved to a file object the folder is always ``archive``. The whole archive is
    held in memory once (some megabytes; a full-size checkpoint with its
    Adam moments, ~0.4 GB).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_file(path) as tmp:
        # Written here, not by torch: its archive writer reports a full disk as "[enforce fail
        # at inline_container.cc] unexpected pos", a write here as "No space left on device".
        tmp.write_bytes(buffer.getbuffer())


def json_text(data: Any) -> str:
    """``data`` as indented JSON, keys in their order, with a final newline."""
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    """Writes ``data`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json_text(data))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
