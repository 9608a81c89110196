"""Reading a source scene: the tiny NeRF ``.npz`` or a Blender synthetic folder.

Every check fails with a one-line :class:`DataError` that names the file (and key or
frame) and what was expected, so that bad data stops at the download stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from nerf.errors import DataError
from nerf.rays import focal_from_angle

BLENDER_SUBSETS = ("train", "val", "test")
FORMATS = ("auto", "npz", "blender")
# The npz file in a normalised ``data/raw`` folder, and the file describing the folder.
RAW_NPZ = "scene.npz"
RAW_INFO = "source.json"
# A file_path ending in one of these names its image file as it is (other exporters'
# "./train/r_0.jpg"); any other gets ".png" appended, as nerf_synthetic's "./train/r_0" does.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class Scene:
    """All views of a source scene, before splitting.

    images:  (n, h, w, 3 or 4) float32 in [0, 1]; 4 channels are RGBA, not composited
    poses:   (n, 4, 4) float32 camera-to-world, OpenGL convention
    focal:   focal length in pixels
    names:   one per view: ``view_000`` (npz) or ``train/r_12`` (Blender)
    subsets: one per view: ``train``/``val``/``test`` (Blender) or ``""`` (npz)
    """

    images: np.ndarray
    poses: np.ndarray
    focal: float
    names: tuple[str, ...]
    subsets: tuple[str, ...]

    @property
    def n_views(self) -> int:
        return int(self.images.shape[0])


def not_rigid(pose: np.ndarray) -> str | None:
    """What keeps a (4, 4) camera-to-world ``pose`` from being a rotation and a translation
    (a scaled, sheared or mirrored camera, which rays would follow distorted), or None.
    Exporters' rounding (nerf_synthetic's: 3e-7) passes."""
    rotation = pose[:3, :3].astype(np.float64)
    if not np.allclose(pose[3], [0, 0, 0, 1], atol=1e-6):
        return f"its last row is {np.round(pose[3], 6).tolist()}, expected [0, 0, 0, 1]"
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or np.linalg.det(rotation) < 0:
        lengths = ", ".join(f"{x:.3g}" for x in np.linalg.norm(rotation, axis=0))
        return (f"its rotation is not one (column lengths {lengths}, determinant "
                f"{np.linalg.det(rotation):.3g}): a scaled, sheared or mirrored camera")
    return None


def _check_poses(poses: np.ndarray, where: str) -> np.ndarray:
    if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
        raise DataError(f"{where}: expected shape (n, 4, 4), got {poses.shape}")
    if not np.issubdtype(poses.dtype, np.number) or not np.isfinite(poses).all():
        raise DataError(f"{where}: expected finite numbers, found NaN or infinity")
    if poses.shape[1] == 3:
        bottom = np.broadcast_to(np.array([0, 0, 0, 1], poses.dtype), (len(poses), 1, 4))
        poses = np.concatenate([poses, bottom], axis=1)
    for i, pose in enumerate(poses):
        if (problem := not_rigid(pose)) is not None:
            raise DataError(f"{where}[{i}]: {problem}; expected a rotation and a translation")
    return poses.astype(np.float32)


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or 0 in images.shape:
        raise DataError(f"{where}: expected shape (n, h, w, 3 or 4), got {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{where}: expected float images in [0, 1] or uint8, got {images.dtype}")
    if not np.isfinite(images).all():
        raise DataError(f"{where}: pixel values must be finite, found NaN or infinity")
    if images.min() < 0 or images.max() > 1:
        raise DataError(
            f"{where}: pixel values must lie in [0, 1], got [{images.min():g}, {images.max():g}]"
        )
    return images.astype(np.float32)


def _check_focal(value: object, where: str) -> float:
    try:
        focal = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a single positive number, got {value!r}") from None
    if not (math.isfinite(focal) and focal > 0):
        raise DataError(f"{where}: expected a single positive number, got {focal}")
    return focal


def load_npz(path: str | Path) -> Scene:
    """Reads a tiny-NeRF ``.npz``: ``images`` (float in [0, 1] or uint8), ``poses``, ``focal``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("images", "poses", "focal") if k not in data.files]
            if missing:
                raise DataError(
                    f"{path}: missing {'keys' if len(missing) > 1 else 'key'} {', '.join(missing)}; "
                    "expected arrays images, poses, "
                    f"focal (has {', '.join(data.files) or 'none'})"
                )
            raw_images, raw_poses, raw_focal = data["images"], data["poses"], data["focal"]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    images = _check_images(raw_images, f"{path}: images")
    poses = _check_poses(raw_poses, f"{path}: poses")
    if len(images) != len(poses):
        raise DataError(
            f"{path}: {len(images)} images but {len(poses)} poses; expected one pose per image"
        )
    names = tuple(f"view_{i:03d}" for i in range(len(images)))
    focal = _check_focal(raw_focal, f"{path}: focal")
    return Scene(images, poses, focal, names, ("",) * len(names))


def _read_transforms(path: Path) -> tuple[float, list[tuple[str, np.ndarray]]]:
    """One ``transforms_*.json``: its camera angle and (relative image path, pose) per frame."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(meta, dict) or "camera_angle_x" not in meta:
        raise DataError(f"{path}: missing camera_angle_x; expected a Blender transforms file")
    angle = camera_angle(meta["camera_angle_x"], path)
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DataError(f"{path}: expected a list of frames")
    out = []
    for i, frame in enumerate(frames):
        where = f"{path}: frames[{i}]"
        file_path = frame.get("file_path") if isinstance(frame, dict) else None
        if not isinstance(file_path, str) or not file_path.strip("./"):
            raise DataError(f"{where}: expected a file_path string")
        rel = PurePosixPath(file_path)
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{where}: file_path {file_path!r} must lie inside the folder")
        if rel.suffix.lower() not in IMAGE_SUFFIXES:  # nerf_synthetic's "./train/r_0": a PNG
            rel = rel.with_name(rel.name + ".png")
        out.append((str(rel), pose_from_json(frame.get("transform_matrix"), where)))
    return angle, out


def camera_angle(value: object, where: object) -> float:
    """A transforms file's ``camera_angle_x``: a number of radians in (0, pi)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.pi:
        raise DataError(f"{where}: camera_angle_x must be an angle in (0, pi) radians, got {value!r}")
    return float(value)


def pose_from_json(matrix: object, where: str) -> np.ndarray:
    """A frame's ``transform_matrix`` (a 4x4, or 3x4, camera-to-world list of numbers) as a
    (4, 4) float64 pose; a DataError naming ``where`` unless it is finite, a rotation and a
    translation (:func:`not_rigid`)."""
    try:
        pose = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        pose = np.zeros(0)
    if pose.shape not in ((4, 4), (3, 4)):
        raise DataError(f"{where}: expected transform_matrix as a 4x4 (or 3x4) list of numbers")
    if not np.isfinite(pose).all():
        raise DataError(f"{where}: transform_matrix must be finite")
    if abs(np.linalg.det(pose[:3, :3])) < 1e-6:
        raise DataError(f"{where}: transform_matrix has a singular rotation; expected camera-to-world")
    full = np.eye(4)
    full[: pose.shape[0]] = pose
    if (problem := not_rigid(full)) is not None:
        raise DataError(f"{where}: transform_matrix: {problem}; expected a rotation and a translation")
    return full


def _blender_frames(folder: Path) -> tuple[float, list[tuple[str, str, np.ndarray]]]:
    """The camera angle and (subset, relative image path, pose) of every frame in ``folder``."""
    angles, frames = {}, []
    for subset in BLENDER_SUBSETS:
        path = folder / f"transforms_{subset}.json"
        if path.is_file():
            angles[path.name], subset_frames = _read_transforms(path)
            frames += [(subset, rel, pose) for rel, pose in subset_frames]
    if not angles:
        raise DataError(
            f"{folder}: no transforms_train.json, transforms_val.json or transforms_test.json; "
            "expected a Blender synthetic folder"
        )
    if max(angles.values()) - min(angles.values()) > 1e-6:
        raise DataError(
            f"{folder}: camera_angle_x differs between {', '.join(angles)}; expected one camera"
        )
    if not frames:
        raise DataError(f"{folder}: {', '.join(angles)} list no frames")
    return next(iter(angles.values())), frames


def blender_files(folder: str | Path) -> list[str]:
    """The files a Blender folder consists of: its transforms_*.json and the images they name."""
    folder = Path(folder)
    _, frames = _blender_frames(folder)
    jsons = [f"transforms_{s}.json" for s in BLENDER_SUBSETS]
    images = dict.fromkeys(rel for _, rel, _ in frames)  # in order, without repeats
    return [j for j in jsons if (folder / j).is_file()] + list(images)


def load_blender(folder: str | Path) -> Scene:
    """Reads a Blender synthetic folder: transforms_{train,val,test}.json and the images
    (RGBA PNGs in nerf_synthetic) they name, with a progress bar on a terminal (a few
    seconds per hundred 800x800 images)."""
    folder = Path(folder)
    angle, frames = _blender_frames(folder)
    images = []
    with tqdm(frames, desc=f"read {folder.name}", unit="image", disable=None, dynamic_ncols=True) as bar:
        for subset, rel, _ in bar:
            file = folder / rel
            where = f"{file} (frame of transforms_{subset}.json)"
            if not file.is_file():
                raise DataError(f"{where}: image file not found")
            try:
                with Image.open(file) as im:
                    if im.mode.startswith("I"):  # 16-bit grey: Pillow's convert would clip it at 255
                        grey = np.round(np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255)
                        pixels = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
                    else:
                        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
                        pixels = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
            except OSError as err:
                raise DataError(f"{where}: not a readable image ({err})") from None
            if images and pixels.shape[:2] != images[0].shape[:2]:
                raise DataError(f"{where}: size {pixels.shape[1]}x{pixels.shape[0]} differs from "
                                f"the first frame's {images[0].shape[1]}x{images[0].shape[0]}")
            images.append(pixels)
    if any(im.shape[-1] == 4 for im in images):  # mixed RGB and RGBA: RGB frames are opaque
        images = [im if im.shape[-1] == 4 else np.dstack([im, np.full(im.shape[:2], 255, np.uint8)])
                  for im in images]
    stack = np.stack(images).astype(np.float32) / 255.0
    width = stack.shape[2]
    return Scene(
        images=stack,
        poses=np.stack([pose for _, _, pose in frames]).astype(np.float32),
        focal=focal_from_angle(angle, width),
        names=tuple(str(PurePosixPath(rel).with_suffix("")) for _, rel, _ in frames),
        subsets=tuple(subset for subset, _, _ in frames),
    )


def detect_format(path: str | Path, format: str = "auto") -> str:
    """``npz`` or ``blender`` for ``path``; checks that ``path`` exists and fits ``format``."""
    path = Path(path)
    if format not in FORMATS:
        raise DataError(f"{path}: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: file or folder not found")
    found = "blender" if path.is_dir() else "npz"
    if found == "npz" and format == "auto" and not is_npz(path):
        if path.suffix.lower() == ".npz":
            raise DataError(f"{path}: not a readable .npz file: expected a zip of .npy arrays, as "
                            "np.savez writes (is it truncated?)")
        raise DataError(f"{path}: unknown format; expected a .npz file or a Blender folder")
    if format not in ("auto", found):
        kind = "a folder" if path.is_dir() else "a file"
        raise DataError(f"{path}: data.format is {format}, but this is {kind}; use auto, or "
                        f"{'blender' if path.is_dir() else 'npz'}")
    return found


def is_npz(path: str | Path) -> bool:
    """Whether ``path`` is a zip of ``.npy`` arrays (what ``np.savez`` writes)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith(".npy") for name in zf.namelist())


def load_scene(path: str | Path, format: str = "auto") -> Scene:
    """Reads the scene at ``path``: a tiny-NeRF ``.npz`` file or a Blender folder."""
    found = detect_format(path, format)
    return load_npz(path) if found == "npz" else load_blender(path)


def load_raw(raw: str | Path) -> Scene:
    """Reads a ``data/raw`` folder written by the download stage."""
    raw = Path(raw)
    info = raw / RAW_INFO
    if not info.is_file():
        raise DataError(
            f"{info}: file not found; run the download stage first (dvc repro download)"
        )
    try:
        fmt = json.loads(info.read_text())["format"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{info}: expected JSON with a format key ({err!r})") from None
    return load_scene(raw / RAW_NPZ if fmt == "npz" else raw, fmt)
