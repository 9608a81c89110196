"""Image files and visualisations: PNG read/write, colormaps, comparison strips."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, UnidentifiedImageError

from nerf.errors import DataError
from nerf.io import atomic_file


def view_filename(index: int, name: str) -> str:
    """File name for test view ``index`` named ``name``: ``(3, "train/r_12") -> "003_train_r_12.png"``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` and the name
    keeps its first 200 (a pose file's ``file_path`` may hold anything); the index keeps
    names unique. The render stage writes ``renders/<kind>/<view_filename>``; evaluate reads
    by the same name.
    """
    if index < 0:
        raise ValueError(f"view index must be >= 0, got {index}")
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9._-]', '_', name)[:200]}.png"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any shape, e.g. (h, w, 3)) -> uint8, rounded to nearest, clipped.

    NaN becomes 0.
    """
    scaled = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_png(path: str | Path) -> np.ndarray:
    """Reads an 8- or 16-bit grey or RGB PNG as (h, w, 3) float32 in [0, 1].

    Raises DataError naming the file if it is missing, unreadable, or has an alpha channel.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    if mode in ("L", "I;16", "I;16B", "I"):
        scale = 255.0 if array.dtype == np.uint8 else 65535.0
        array = np.repeat(array[..., None], 3, axis=-1)
    elif mode == "RGB":
        scale = 255.0
    else:
        raise DataError(f"{path}: image mode {mode}; expected an RGB or greyscale PNG")
    return (array.astype(np.float32) / np.float32(scale)).clip(0.0, 1.0)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Writes (h, w, 3), (h, w, 1) or (h, w) float [0, 1] or uint8 as an 8-bit PNG, atomically."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(f"expected (h, w), (h, w, 1) or (h, w, 3) image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = to_uint8(array)
    with atomic_file(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def colorize(values: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
    """Maps (h, w) scalars through a matplotlib colormap: lo -> start, hi -> end, clipped.

    E.g. ``turbo`` for depth over [near, far], ``viridis`` for opacity over [0, 1].
    Returns (h, w, 3) float32 in [0, 1]; NaN maps like ``lo``.
    """
    if not hi > lo:
        raise ValueError(f"colorize needs hi > lo, got lo={lo} hi={hi}")
    t = np.clip((np.nan_to_num(np.asarray(values, dtype=np.float64), nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return matplotlib.colormaps[cmap](t)[..., :3].astype(np.float32)


def depth_image(depth: np.ndarray, opacity: np.ndarray, near: float, far: float) -> np.ndarray:
    """(h, w) expected depth and opacity -> (h, w, 3) turbo colours over [near, far]; where
    the ray sees through to the background, the far plane's colour."""
    return colorize(depth + (1 - opacity) * far, near, far)


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """(h, w, c) -> (h // factor, w // factor, c): each factor x factor block averaged (a
    remainder of rows or columns is dropped); factor 1 returns the image as it is."""
    if factor < 1:
        raise ValueError(f"downscale factor must be >= 1, got {factor}")
    if factor == 1:
        return image
    h, w, c = image.shape[0] // factor, image.shape[1] // factor, image.shape[2]
    blocks = image[: h * factor, : w * factor].reshape(h, factor, w, factor, c)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(image.dtype)


def side_by_side(
    truth: np.ndarray, pred: np.ndarray, gap: int = 4, error_max: float = 0.25, cmap: str = "inferno"
) -> np.ndarray:
    """Comparison strip ``truth | pred | error`` with ``gap``-pixel white separators.

    truth, pred: (h, w, 3) float in [0, 1]. The error panel is the mean absolute error over
    channels, colorized with ``cmap`` over [0, error_max]. Returns (h, 3w + 2*gap, 3) float32.
    """
    truth = np.asarray(truth, dtype=np.float32)
    pred = np.asarray(pred, dtype=np.float32)
    if truth.shape != pred.shape or truth.ndim != 3 or truth.shape[-1] != 3:
        raise ValueError(f"expected two (h, w, 3) images of one shape, got {truth.shape} and {pred.shape}")
    error = colorize(np.abs(truth - pred).mean(axis=-1), 0.0, error_max, cmap)
    sep = np.ones((truth.shape[0], gap, 3), dtype=np.float32)
    return np.concatenate([truth, sep, pred, sep, error], axis=1)
