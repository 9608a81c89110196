"""The split stage: divide the source views into train, validation and test, composite and resize them."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from nerf.config import SplitConfig, to_dict
from nerf.errors import ConfigError, DataError
from nerf.io import atomic_dir, write_json
from nerf.rays import scaled_camera
from nerf.scene import Scene, load_raw
from nerf.views import Views, save_views

BACKGROUNDS = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0)}
PARTS = ("train", "val", "test")


class SplitIndices(NamedTuple):
    """Source view indices of each part, each in source order; the parts are disjoint."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def take_test_views(scene: Scene, config: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) view indices by ``config.strategy``: the test views, and the views
    left for training and validation (official: the source's train subset)."""
    n = scene.n_views
    if n < 2:
        raise DataError(f"the scene has {n} view; a split needs at least 2")
    n_test = min(max(round(config.test_fraction * n), 1), n - 1)
    if config.strategy == "tail":
        test = np.arange(n - n_test, n)
    elif config.strategy == "every_nth":
        test = np.arange(0, n, config.every_nth)
    elif config.strategy == "random":
        test = np.sort(np.random.default_rng(config.seed).permutation(n)[:n_test])
    elif config.strategy == "official":
        subsets = np.array(scene.subsets)
        present = sorted(set(scene.subsets) - {""})
        if not present:
            raise ConfigError("split.strategy official needs a Blender source with its own "
                              "train and test subsets; the source is an npz file")
        if not {"train", "test"} <= set(present):
            files = ", ".join(f"transforms_{s}.json" for s in present)
            raise ConfigError(f"split.strategy official needs transforms_train.json and "
                              f"transforms_test.json; the source has views from {files} only")
        return np.flatnonzero(subsets == "train"), np.flatnonzero(subsets == "test")
    else:
        raise ConfigError(f"split.strategy: unknown strategy {config.strategy!r}")
    return np.setdiff1d(np.arange(n), test), test


def check_no_leak(scene: Scene, indices: SplitIndices) -> None:
    """A DataError if a training view's name is also a validation or test view's: the same
    image listed twice in the source (in two of a Blender folder's transforms files, or
    twice in one), which would score the model on a view it trained on."""
    trained = {scene.names[i] for i in indices.train}
    for part, label in (("test", "test"), ("val", "validation")):
        leaked = [scene.names[i] for i in getattr(indices, part) if scene.names[i] in trained]
        if leaked:
            name = leaked[0]
            lists = Counter(f"transforms_{s}.json" for n, s in zip(scene.names, scene.subsets) if n == name)
            where = " and ".join(f + (f" ({k} times)" if k > 1 else "") for f, k in lists.items())
            more = f" (and {len(leaked) - 1} more)" if len(leaked) > 1 else ""
            raise DataError(f"the source lists {name}{more} in {where}, and the split makes it both a "
                            f"training and a {label} view: its {label} score would be of a view "
                            "the model trained on; list each image once")


def evenly_spaced(indices: np.ndarray, count: int) -> np.ndarray:
    """``count`` of ``indices`` spread evenly from the first to the last."""
    if count == 0:
        return indices[:0]
    return indices[np.round(np.linspace(0, len(indices) - 1, count)).astype(np.int64)]


def split_indices(scene: Scene, config: SplitConfig) -> SplitIndices:
    """The train, validation and test view indices of ``scene`` by ``config``.

    The validation views are ``config.val_views`` views spread evenly over the views that
    are not test views; with ``strategy: official`` they come from the source's own
    validation subset when it has one, and the training views are its train subset.
    A DataError if a view the source lists twice would be both trained and tested (or
    validated) on.
    """
    indices = _choose(scene, config)
    check_no_leak(scene, indices)
    return indices


def _choose(scene: Scene, config: SplitConfig) -> SplitIndices:
    pool, test = take_test_views(scene, config)
    n_val = config.val_views
    own = np.flatnonzero(np.array(scene.subsets) == "val") if config.strategy == "official" else pool[:0]
    if len(own) > 0:
        if n_val > len(own):
            raise ConfigError(f"split.val_views is {n_val}, but the source has {len(own)} "
                              "validation views (transforms_val.json)")
        return SplitIndices(pool, evenly_spaced(own, n_val), test)
    if n_val >= len(pool):
        held_by = {"tail": f"split.test_fraction {config.test_fraction}",
                   "random": f"split.test_fraction {config.test_fraction}",
                   "every_nth": f"split.every_nth {config.every_nth}",
                   "official": "transforms_test.json"}[config.strategy]
        raise ConfigError(f"split.val_views is {n_val}, but only {len(pool)} views are left after the "
                          f"{len(test)} test views ({held_by}, of {scene.n_views} views); at least one must "
                          "stay for training: lower split.val_views, or hold out fewer test views")
    val = evenly_spaced(pool, n_val)
    return SplitIndices(np.setdiff1d(pool, val), val, test)


def composite(images: np.ndarray, background: np.ndarray) -> np.ndarray:
    """RGBA -> RGB as ``rgb * a + background * (1 - a)``; RGB images pass through."""
    if images.shape[-1] == 3:
        return images
    rgb, alpha = images[..., :3], images[..., 3:]
    return (rgb * alpha + background * (1.0 - alpha)).astype(np.float32)


def box_weights(n_in: int, n_out: int, span: float | None = None) -> torch.Tensor:
    """(n_out, n_in) float64: output pixel j is the mean of the source interval
    [j, j + 1) * span / n_out, the whole of it centred on the source's (``span`` source
    pixels, by default ``n_in``), each source pixel weighted by the length of it inside the
    interval; the part of an interval past the source's edge counts for nothing."""
    span = float(n_in) if span is None else span
    edges = (n_in - span) / 2 + torch.arange(n_out + 1, dtype=torch.float64) * (span / n_out)
    pixels = torch.arange(n_in, dtype=torch.float64)
    inside = torch.minimum(edges[1:, None], pixels + 1) - torch.maximum(edges[:-1, None], pixels)
    weights = inside.clamp(min=0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def resize(images: np.ndarray, width: int | None) -> np.ndarray:
    """Area-averages (box-filters) (n, h, w, c) images to ``width``, height by aspect ratio.

    Exact for any scale: each output pixel averages the source area it covers, partial source
    pixels by their share (``F.interpolate``'s "area" mode, adaptive average pooling, weights
    whole pixels equally, which moves edges by up to half a source pixel and changes means
    when the width does not divide). Linear, so resized coverage still recomposites resized
    colours exactly.

    Rows and columns share one scale, ``w / width`` source pixels an output pixel, as the
    views' one focal length (:func:`nerf.rays.scaled_camera`) assumes. Where the height
    rounds (a 4:3 source at 5 columns: 3.75 rows -> 4), the rows span that much more or less
    of the source, centred: up to half an output pixel past the top and bottom edges (edge
    rows average what the source has) or short of them (a sliver is cropped).
    """
    _n, h, w, _ = images.shape
    if width is None or width == w:
        return images
    if width > w:
        raise ConfigError(f"split.image_size {width} exceeds the source width {w}; "
                          "only downscaling is supported")
    height, _, _ = scaled_camera(h, w, 1.0, width)
    rows = box_weights(h, height, span=height * w / width).float()
    columns = box_weights(w, width).float()
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)  # (n, c, h, w)
    out = rows @ x @ columns.T  # (n, c, height, width)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def split_scene(scene: Scene, config: SplitConfig) -> tuple[dict[str, Views], dict[str, Any]]:
    """The train, val and test views of ``scene`` (keyed by part) and the manifest
    describing the split."""
    indices = split_indices(scene, config)
    rgba = scene.images.shape[-1] == 4
    background = config.background if rgba else "black"
    bg = np.array(BACKGROUNDS[background], np.float32)
    if not rgba and config.background != "black":
        print(f"note: split.background is {config.background}, but the source images are RGB, "
              "already composited on black; keeping black", file=sys.stderr)
    images = resize(composite(scene.images, bg), config.image_size)
    # Area averaging is linear, so the resized coverage still recomposites the resized colours.
    alpha = resize(scene.images[..., 3:], config.image_size)[..., 0].astype(np.float32) if rgba else None
    _, _, focal = scaled_camera(*scene.images.shape[1:3], scene.focal, images.shape[2])
    views = Views(images.astype(np.float32), scene.poses, focal, scene.names, bg, alpha)
    parts = {part: views.subset(idx) for part, idx in zip(PARTS, indices)}
    manifest = {
        "strategy": config.strategy,
        "params": to_dict(config),
        "source_size": {"width": int(scene.images.shape[2]), "height": int(scene.images.shape[1])},
        "image_size": {"width": views.width, "height": views.height},
        "focal": focal,
        "background": background,
        "source_rgba": rgba,
        **{
            part: {"count": len(idx), "indices": idx.tolist(), "names": list(parts[part].names)}
            for part, idx in zip(PARTS, indices)
        },
    }
    return parts, manifest


def split(raw: str | Path, out: str | Path, config: SplitConfig, min_side: int = 1) -> dict[str, Any]:
    """Reads ``raw`` (the download stage's folder) and writes train.npz, val.npz, test.npz
    and manifest.json. Views with fewer than ``min_side`` pixels on a side are refused
    before any write (the evaluate stage's SSIM window needs :attr:`EvalConfig.min_image_side`:
    better told now than after training)."""
    parts, manifest = split_scene(load_raw(raw), config)
    size = manifest["image_size"]
    if min(size["width"], size["height"]) < min_side:
        source = manifest["source_size"]
        views = (f"the source's {source['width']}x{source['height']} views are" if config.image_size is None
                 else f"split.image_size {config.image_size} makes {size['width']}x{size['height']} views "
                      f"(of the source's {source['width']}x{source['height']}),")
        raise ConfigError(f"{views} too small for evaluate's SSIM window (eval.ssim_kernel): "
                          f"it needs at least {min_side} pixels on each side")
    with atomic_dir(out, holds=(*(f"{part}.npz" for part in parts), "manifest.json")) as tmp:
        for part, views in parts.items():
            save_views(tmp / f"{part}.npz", views)
        write_json(tmp / "manifest.json", manifest)
    return manifest
