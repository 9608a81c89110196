"""Which code runs a fused-kernel choice: ``auto | torch | triton`` (``model.fast.hash_kernel``,
``model.fast.march_kernel``, ``model.fast.render_kernel``).

The Triton kernels (:mod:`nerf.hash_kernel`, :mod:`nerf.march_kernel`,
:mod:`nerf.render_kernel`) run on CUDA, or on the CPU in Triton's interpreter under
``TRITON_INTERPRET=1`` (how the CPU tests check them); everywhere else the PyTorch code runs.
``auto`` picks Triton on CUDA where the package is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import torch

from nerf.errors import ConfigError

CHOICES = ("auto", "torch", "triton")


def triton_runs_on(device: torch.device) -> bool:
    """Whether a ``triton`` choice runs the fused kernels on ``device``: on CUDA, or anywhere
    under ``TRITON_INTERPRET=1``."""
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def prepare(choice: str, module: str) -> None:
    """Checks ``choice`` and imports the kernels' ``module`` now where ``choice`` may run it
    (so that a resumable checkpoint's code digest covers it); auto runs kernels only on CUDA,
    so a machine without it skips the import (~1 s)."""
    if choice not in CHOICES:
        raise ValueError(f"kernel must be auto, torch or triton, got {choice!r}")
    if choice == "triton" or (choice == "auto" and torch.cuda.is_available()):
        with contextlib.suppress(ImportError):  # no triton: the PyTorch path, or an error on CUDA
            importlib.import_module(module)


def uses_triton(choice: str, device: torch.device, key: str) -> bool:
    """Whether ``choice`` (the value of params key ``key``) runs the Triton kernels on
    ``device``: ``triton`` on CUDA or under the interpreter, ``auto`` on CUDA with the package
    installed. ``triton`` without the package is a ConfigError naming ``key``."""
    if choice == "auto":
        return device.type == "cuda" and triton_installed()
    if choice == "torch" or not triton_runs_on(device):
        return False
    if not triton_installed():
        raise ConfigError(f"{key} is triton, but the triton package is not installed: "
                          "pip install triton, or set it to auto or torch")
    return True
