"""A set of posed RGB views (and their coverage, for RGBA sources): what the split stage
writes and training and evaluation read."""

from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path

import numpy as np

from nerf.errors import UNREADABLE, DataError, describe
from nerf.io import atomic_file


@dataclasses.dataclass(frozen=True)
class Views:
    """Posed pinhole views of one scene, composited on ``background``.

    images:     (n_views, height, width, 3) float32 in [0, 1]
    poses:      (n_views, 4, 4) float32 camera-to-world, OpenGL convention (camera looks
                down -z, y up)
    focal:      focal length in pixels at this width
    names:      one name per view, naming the source view (e.g. ``train/r_12``)
    background: (3,) float32 colour the images were composited on
    alpha:      (n_views, height, width) float32 coverage in [0, 1] of RGBA sources (how much
                of each pixel the scene covers; ``images`` = colour + (1 - alpha) background),
                or None for RGB sources
    """

    images: np.ndarray
    poses: np.ndarray
    focal: float
    names: tuple[str, ...]
    background: np.ndarray
    alpha: np.ndarray | None = None

    @property
    def n_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def subset(self, indices: list[int] | np.ndarray) -> Views:
        indices = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            images=self.images[indices],
            poses=self.poses[indices],
            names=tuple(self.names[i] for i in indices),
            alpha=None if self.alpha is None else self.alpha[indices],
        )


def save_views(path: str | Path, views: Views) -> None:
    """Writes ``views`` to a compressed ``.npz``, atomically and byte-reproducibly."""
    arrays = {
        "images": views.images.astype(np.float32),
        "poses": views.poses.astype(np.float32),
        "focal": np.float64(views.focal),
        "names": np.array(views.names, dtype=str),
        "background": views.background.astype(np.float32),
    }
    if views.alpha is not None:
        arrays["alpha"] = views.alpha.astype(np.float32)
    with atomic_file(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            # A fixed timestamp: the same views give the same bytes (and the same DVC hash).
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def load_views(path: str | Path) -> Views:
    """Reads a file written by :func:`save_views`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; run the split stage first (dvc repro split)")
    try:
        with np.load(path) as data:
            missing = {"images", "poses", "focal", "names", "background"} - set(data.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)}; not a split file")
            views = Views(
                images=data["images"].astype(np.float32),
                poses=data["poses"].astype(np.float32),
                focal=float(data["focal"]),
                names=tuple(str(n) for n in np.atleast_1d(data["names"])),
                background=data["background"].astype(np.float32),
                alpha=data["alpha"].astype(np.float32) if "alpha" in data.files else None,
            )
    except UNREADABLE as err:
        raise DataError(f"{path}: not a readable split file ({describe(err, path)}); rerun the split stage "
                        "(dvc repro -f split)") from None
    problem = _inconsistency(views)
    if problem:
        raise DataError(f"{path}: {problem}; rerun the split stage (dvc repro -f split)")
    return views


def _inconsistency(views: Views) -> str | None:
    """What in ``views`` breaks the shapes and ranges :class:`Views` documents, or None."""
    images = views.images
    if images.ndim != 4 or images.shape[-1] != 3:
        return f"images has shape {images.shape}, expected (views, height, width, 3)"
    n = images.shape[0]
    if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        return "images: expected colours in [0, 1]"
    if views.poses.shape != (n, 4, 4) or not np.isfinite(views.poses).all():
        return f"poses has shape {views.poses.shape}, expected ({n}, 4, 4) finite camera-to-world matrices"
    if len(views.names) != n:
        return f"{len(views.names)} names for {n} images"
    if not (math.isfinite(views.focal) and views.focal > 0):
        return f"focal is {views.focal}, expected a positive number of pixels"
    if views.background.shape != (3,):
        return f"background has shape {views.background.shape}, expected (3,): one colour"
    if views.alpha is not None and views.alpha.shape != images.shape[:3]:
        return f"alpha has shape {views.alpha.shape}, expected {images.shape[:3]} (one value per pixel)"
    return None
