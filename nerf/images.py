"""Image files and visualisations: PNG read/write, colormaps, comparison strips."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

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


DEPTH_CMAP = "turbo"  # depth images' colours, near (dark blue) to far (dark red)


def depth_image(depth: np.ndarray, opacity: np.ndarray, near: float, far: float) -> np.ndarray:
    """(h, w) expected depth and opacity -> (h, w, 3) ``DEPTH_CMAP`` colours over [near, far];
    where the ray sees through to the background, the far plane's colour."""
    return colorize(depth + (1 - opacity) * far, near, far, DEPTH_CMAP)


OPACITY_CMAP = "viridis"  # opacity images' colours, 0 (dark purple: the ray sees through) to 1 (yellow)


def opacity_image(opacity: np.ndarray) -> np.ndarray:
    """(h, w) opacity (accumulated alpha) in [0, 1] -> (h, w, 3) ``OPACITY_CMAP`` colours."""
    return colorize(opacity, 0.0, 1.0, OPACITY_CMAP)


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


def panels_row(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """(h, w, 3) float panels of one shape side by side, ``gap`` white columns between them:
    (h, n*w + (n-1)*gap, 3) float32."""
    if not panels or any(p.shape != panels[0].shape or p.ndim != 3 or p.shape[-1] != 3 for p in panels):
        raise ValueError(f"expected (h, w, 3) images of one shape, got {[p.shape for p in panels]}")
    sep = np.ones((panels[0].shape[0], gap, 3), dtype=np.float32)
    row = [np.asarray(panels[0], dtype=np.float32)]
    for panel in panels[1:]:
        row += [sep, np.asarray(panel, dtype=np.float32)]
    return np.concatenate(row, axis=1)


ERROR_CMAP = "inferno"  # the error panels' colours, black (no error) to yellow


def error_image(truth: np.ndarray, pred: np.ndarray, error_max: float = 0.25) -> np.ndarray:
    """(h, w, 3) images in [0, 1] -> their mean absolute error over channels, colorized with
    ``ERROR_CMAP`` over [0, error_max]: (h, w, 3) float32."""
    truth, pred = np.asarray(truth, dtype=np.float32), np.asarray(pred, dtype=np.float32)
    if truth.shape != pred.shape or truth.ndim != 3 or truth.shape[-1] != 3:
        raise ValueError(f"expected two (h, w, 3) images of one shape, got {truth.shape} and {pred.shape}")
    return colorize(np.abs(truth - pred).mean(axis=-1), 0.0, error_max, ERROR_CMAP)


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """(h, w, c) -> (h * factor, w * factor, c), each pixel a factor x factor block (nearest
    neighbour: a small render's pixels stay visible as pixels); factor 1 returns the image."""
    if factor < 1:
        raise ValueError(f"enlarge factor must be >= 1, got {factor}")
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


CAPTION_SIZES = (8, 24)  # the captions' font sizes in pixels, smallest to largest


def caption_row(captions: Sequence[str], panel_width: int, gap: int) -> np.ndarray:
    """A white row of dark captions, each centred over its panel of ``panel_width`` pixels,
    the panels ``gap`` apart: (rows, n * panel_width + (n - 1) * gap, 3) float32 in [0, 1].

    The font grows with the panels (1/12 of their width, within ``CAPTION_SIZES``) and
    shrinks until the longest caption fits its panel.
    """
    if not captions or panel_width < 1:
        raise ValueError(f"need captions and panels >= 1 pixel wide, got {len(captions)} and {panel_width}")
    size = min(max(panel_width // 12, CAPTION_SIZES[0]), CAPTION_SIZES[1])
    font = ImageFont.load_default(size)
    while size > CAPTION_SIZES[0] and max(font.getlength(text) for text in captions) > panel_width - 2:
        size -= 1
        font = ImageFont.load_default(size)
    rows = math.ceil(1.6 * size)
    canvas = Image.new("L", (len(captions) * panel_width + (len(captions) - 1) * gap, rows), 255)
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(captions):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = i * (panel_width + gap) + (panel_width - (right - left)) / 2 - left
        draw.text((x, (rows - (bottom - top)) / 2 - top), text, fill=0, font=font)
    grey = np.asarray(canvas, dtype=np.float32) / np.float32(255)
    return np.repeat(grey[..., None], 3, axis=-1)


def scale_bar(width: int, rows: int, cmap: str) -> np.ndarray:
    """A colour scale: ``cmap`` from its start at the left to its end at the right, each
    column the colour :func:`colorize` gives the value at its centre; (rows, width, 3) float32."""
    centres = (np.arange(width, dtype=np.float64) + 0.5) / width
    return np.repeat(colorize(centres[None], 0.0, 1.0, cmap), rows, axis=0)


def captioned(
    panels: Sequence[np.ndarray], captions: Sequence[str], scales: Sequence[str | None],
    fit: int = 256, gap: int = 4,
) -> np.ndarray:
    """What a person looks at: ``panels`` ((h, w, 3) floats in [0, 1], one shape) side by
    side (:func:`panels_row`), enlarged (:func:`enlarge`) by the largest whole factor ``k``
    that keeps a panel's longer side within ``fit`` pixels (1 for a panel that large
    already), under a caption each (:func:`caption_row`). Where ``scales`` names a colormap
    (a panel whose colours stand for values), its :func:`scale_bar` runs between the
    panel's caption and the panel, a third of the captions' height, with a white line under
    it: the caption says the values at its ends ("depth, 2 to 6").

    Returns (header + k*h, k*(n*w + (n-1)*gap), 3) float32.
    """
    if len(captions) != len(panels) or len(scales) != len(panels):
        raise ValueError(f"need a caption and a scale (or None) per panel: {len(panels)} panels, "
                         f"{len(captions)} captions, {len(scales)} scales")
    height, width = panels[0].shape[:2]
    factor = max(fit // max(height, width), 1)
    header = [caption_row(captions, factor * width, factor * gap)]
    if any(scales):
        rows = math.ceil(header[0].shape[0] / 3)
        blank = np.ones((rows, factor * width, 3), np.float32)
        bars = [blank if cmap is None else scale_bar(factor * width, rows, cmap) for cmap in scales]
        line = np.ones((max(rows // 3, 1), header[0].shape[1], 3), np.float32)
        header += [panels_row(bars, factor * gap), line]
    return np.concatenate([*header, enlarge(panels_row(panels, gap), factor)], axis=0)


def comparison(
    truth: np.ndarray, pred: np.ndarray, psnr: float, fit: int = 256, gap: int = 4, error_max: float = 0.25
) -> np.ndarray:
    """truth | pred | error (:func:`error_image`), :func:`captioned` "truth", "render, 28.14
    dB" (``psnr``, the render's) and "|error|, 0 to 0.25" over the error's scale bar.

    truth, pred: (h, w, 3) float in [0, 1]. Returns (header + k*h, k*(3w + 2*gap), 3)
    float32 (:func:`captioned`).
    """
    score = f"{psnr:.2f} dB" if math.isfinite(psnr) else "identical to the truth"
    captions = ["truth", f"render, {score}", f"|error|, 0 to {error_max:g}"]
    panels = [truth, pred, error_image(truth, pred, error_max)]
    return captioned(panels, captions, (None, None, ERROR_CMAP), fit, gap)
