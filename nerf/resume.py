"""Resumable training: the train stage's checkpoint, and whether it may be resumed.

The checkpoint holds the training loop's whole state (``training._Loop.state``), the
DVCLive files logged up to it, and a *fingerprint* of everything that shapes training:
the params the train stage reads, the bytes of its input views, the source of the nerf
modules in use, the torch version and the device type. A run resumes only from a
checkpoint with the same fingerprint; otherwise it starts over and says which entries
changed.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from nerf.errors import UNREADABLE, describe
from nerf.io import save_torch, sha256_file

CHECKPOINT = "last.pt"


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


def code_digest(package: str = "nerf") -> str:
    """SHA-256 over the source files of ``package``'s modules imported in this process."""
    digest = hashlib.sha256()
    for name in sorted(m for m in sys.modules if m == package or m.startswith(f"{package}.")):
        source = getattr(sys.modules[name], "__file__", None)
        if source:
            digest.update(name.encode() + b"\0" + Path(source).read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(params: Mapping[str, Any], inputs: Iterable[Path], device: torch.device) -> dict[str, str]:
    """Flat {name: value} of what a resumed run must share with the checkpoint's run."""
    entries = flatten(params)
    for path in inputs:
        entries[f"file {path}"] = sha256_file(path)
    entries["code of the nerf package"] = code_digest()
    entries["torch version"] = str(torch.__version__)
    entries["device"] = device.type
    return entries


def differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Human-readable entries that differ: 'train.lr: 0.01 -> 0.005'."""
    changed = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, "(absent)"), new.get(key, "(absent)")
        if before != after:
            if key.startswith(("file ", "code ")):
                changed.append(f"{key} changed")
            else:
                changed.append(f"{key}: {before} -> {after}")
    return changed


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
