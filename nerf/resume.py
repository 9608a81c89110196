"""Resumable training: the train stage's checkpoint, and whether it may be resumed.

The checkpoint holds the training loop's whole state (``training._Loop.state``), the
DVCLive files logged up to it, and a *fingerprint* of everything that shapes training:
the params the train stage reads, the bytes of its input views, the source of each nerf
module in use and of the stage's script, the torch version and the device type. A run resumes only from a
checkpoint with the same fingerprint; otherwise it starts over and says which entries
changed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch

from nerf.errors import UNREADABLE, TrainingError, describe
from nerf.io import save_torch, sha256_file

CHECKPOINT = "last.pt"
LOCK = ".lock"  # beside the checkpoint: the pid of the training that holds the folder


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Holds the checkpoints' ``folder`` for this training alone while it runs. A second one
    at once (killing ``dvc repro`` leaves its stage running, and the next ``dvc repro`` starts
    another) would resume from, and overwrite, the same checkpoint and outputs: it is refused,
    with the holder's pid. The lock is the OS's (``flock``), so it ends with its process
    however that ends; where there is none (Windows) nothing is locked."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with os.fdopen(os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644), "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "unknown"
            raise TrainingError(
                f"{folder} is in use by another training (pid {holder}); wait for it to end or stop "
                f"it (`kill {holder}`: killing `dvc repro` does not stop the stage it runs)"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"fast": {"levels": 8}}} -> {"model.fast.levels": "8"}."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = repr(value)
    return flat


CODE = "code of "  # a fingerprint entry's prefix: "code of nerf.training" -> its source's SHA-256


def code_digests(package: str = "nerf") -> dict[str, str]:
    """{"code of nerf.x": SHA-256 of its source} for ``package``'s modules imported in this
    process. One entry per module, so that a kernel choice, which imports another module,
    reads as that module coming into use, not as a code change."""
    digests = {}
    for name in sorted(m for m in sys.modules if m == package or m.startswith(f"{package}.")):
        source = getattr(sys.modules[name], "__file__", None)
        if source:
            digests[f"{CODE}{name}"] = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    return digests


def fingerprint(params: Mapping[str, Any], inputs: Iterable[Path], device: torch.device,
                script: Path | None = None) -> dict[str, str]:
    """Flat {name: value} of what a resumed run must share with the checkpoint's run.

    ``script``: the stage script that trains (its ``__file__``), entered as ``code of
    stages/train.py``: DVC reruns the stage when the script changes, and a checkpoint made
    by the old script must then not be finished as if nothing had."""
    entries = flatten(params)
    for path in inputs:
        entries[f"file {path}"] = sha256_file(path)
    entries.update(code_digests())
    if script is not None:
        entries[f"{CODE}{script.parent.name}/{script.name}"] = sha256_file(script)
    entries["torch version"] = str(torch.__version__)
    entries["device"] = device.type
    return entries


def differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Human-readable entries that differ: 'train.lr: 0.01 -> 0.005', 'code of nerf.x
    changed', 'nerf.hash_kernel: not in use -> in use'."""
    changed = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        module = key.removeprefix(CODE)
        # Only a module comes into use. A script's entry ("code of stages/train.py") and the
        # one entry of checkpoints from before session 22 ("code of the nerf package") are
        # not module names, so a checkpoint without them reads as made by other code.
        if key.startswith(CODE) and None in (before, after) and _is_module_name(module):
            use = "not in use -> in use" if before is None else "in use -> not in use"
            changed.append(f"{module}: {use}")
        elif key.startswith(("file ", CODE)):
            changed.append(f"{key} changed")
        else:
            changed.append(f"{key}: {_shown(before)} -> {_shown(after)}")
    return changed


def _is_module_name(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else value


def snapshot_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the DVCLive logs and images) as {relative path: bytes}."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def restore_files(files: Mapping[str, bytes], folder: Path) -> None:
    for name, data in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def save(path: Path, state: dict, fingerprint: Mapping[str, str], logs: Mapping[str, bytes]) -> None:
    """Writes the checkpoint atomically: a kill mid-write leaves the previous one."""
    save_torch(path, {"fingerprint": dict(fingerprint), "state": state, "logs": dict(logs)})


class Resume(NamedTuple):
    state: dict | None  # the loop state to continue from; None: start from step 0
    logs: dict[str, bytes]  # DVCLive files as they were at that state
    message: str  # what was decided and why, for the user


def load(path: Path, fingerprint: Mapping[str, str], steps: int, seconds: float | None = None) -> Resume:
    """The checkpoint at ``path`` if this run may continue it, with a message saying why or why not."""
    if not path.is_file():
        return Resume(None, {}, f"no checkpoint at {path}; training from step 0")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state, logs, old = saved["state"], saved["logs"], saved["fingerprint"]
    except UNREADABLE as err:
        return Resume(None, {}, f"{path} is unreadable ({describe(err, path)}); starting over from step 0")
    changed = differences(old, fingerprint)
    if changed:
        shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        return Resume(None, {}, f"{path} was made with different inputs ({shown}); starting over from step 0")
    step, spent = int(state["step"]), float(state["seconds"])
    if step >= steps or (seconds is not None and spent >= seconds):
        held = (f"all {steps} steps" if step >= steps
                else f"{spent:.1f} s of training, the whole {seconds:g}-s budget,")
        return Resume(state, logs, f"{path} already holds {held} with these inputs; nothing left to train "
                      f"(delete {path.parent} to train again from scratch)")
    budget = f" (or {spent:.1f} s of {seconds:g} s)" if seconds is not None else ""
    return Resume(state, logs, f"resuming from {path} at step {step} of {steps}{budget}")
