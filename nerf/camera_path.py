"""Novel camera poses: circular and spiral paths around the scene, or poses from a JSON file.

Poses are (n, 4, 4) camera-to-world matrices in the data sets' convention (``nerf.rays``):
the camera looks down its -z axis with y up. Paths orbit ``center`` about the world z axis
(the Blender scenes' up), elevation measured from the horizontal plane.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from nerf.errors import DataError
from nerf.rays import focal_from_angle
from nerf.scene import IMAGE_SUFFIXES, camera_angle, pose_from_json


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) camera-to-world pose at ``eye`` (3,) looking at ``target`` (3,), with the
    image's up as close to ``up`` (default world +z) as the view direction allows."""
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    forward = target - eye
    if np.linalg.norm(forward) == 0:
        raise ValueError("look_at: eye and target coincide")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along up: any right will do
        right = np.cross(forward, [0.0, 1.0, 0.0] if abs(forward[1]) < 0.9 else [1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    camera_up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, camera_up, -forward, eye
    return pose


def orbit(
    frames: int, radius: float, elevation: float, center: np.ndarray, amplitude: float = 0.0,
    turns: float = 1.0,
) -> np.ndarray:
    """(frames, 4, 4) poses on ``turns`` circles about the z axis through ``center``, at
    ``radius`` and ``elevation`` degrees; with ``amplitude`` > 0 a spiral whose elevation
    swings by +-amplitude degrees (one full swing over the path) so that the scene is seen
    from above and below its mean height. With whole ``turns`` the path closes: the frame
    after the last is the first."""
    if frames < 1:
        raise ValueError(f"orbit needs at least 1 frame, got {frames}")
    center = np.asarray(center, dtype=np.float64)
    phase = np.arange(frames) / frames
    azimuth = 2 * math.pi * turns * phase
    height = np.radians(elevation + amplitude * np.sin(2 * math.pi * phase))
    eyes = center + radius * np.stack(
        [np.cos(height) * np.cos(azimuth), np.cos(height) * np.sin(azimuth), np.sin(height)], axis=-1
    )
    return np.stack([look_at(eye, center) for eye in eyes]).astype(np.float32)


def look_target(poses: np.ndarray, distance: float) -> np.ndarray:
    """The point (3,) closest, in least squares, to every camera's optical axis: the centre
    of what (n, 4, 4) ``poses`` look at. Where the axes do not pin one point down (a single
    camera, or parallel axes), the point ``distance`` ahead of the cameras' centroid along
    their mean axis; the centroid itself where the axes cancel (cameras facing each other)."""
    origins = poses[:, :3, 3].astype(np.float64)
    axes = -poses[:, :3, 2].astype(np.float64)
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    projectors = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # onto each axis' normal plane
    a = projectors.sum(axis=0)
    b = (projectors @ origins[:, :, None]).sum(axis=0)[:, 0]
    if np.linalg.cond(a) > 1e6:
        mean_axis = axes.mean(axis=0)
        length = np.linalg.norm(mean_axis)
        return origins.mean(axis=0) + (distance * mean_axis / length if length > 1e-6 else 0.0)
    return np.linalg.solve(a, b)


def scene_center(around: np.ndarray, distance: float) -> tuple[np.ndarray, float]:
    """What the cameras ``around`` (n, 4, 4) look at (:func:`look_target`, ``distance`` ahead
    of them where their axes do not meet), (3,), and their mean distance from it."""
    center = look_target(around, distance)
    return center, float(np.linalg.norm(around[:, :3, 3] - center, axis=-1).mean())


def video_path(
    kind: str, frames: int, radius: float | None, elevation: float, amplitude: float, turns: float,
    around: np.ndarray, distance: float,
) -> np.ndarray:
    """(frames, 4, 4) poses of the ``orbit`` or ``spiral`` path around what the cameras
    ``around`` (n, 4, 4) look at (:func:`scene_center`), at ``radius`` (None: their mean
    distance from it)."""
    center, mean_distance = scene_center(around, distance)
    swing = amplitude if kind == "spiral" else 0.0
    return orbit(frames, mean_distance if radius is None else radius, elevation, center, swing, turns)


def depth_shifts(poses: np.ndarray, around: np.ndarray, near: float, far: float) -> np.ndarray:
    """(n,) how much farther each of ``poses`` (n, 4, 4) is from what the cameras ``around``
    look at (:func:`scene_center`) than those cameras are on average, but never less than
    ``-near``: the shift of the trained [near, far] that keeps the scene in range for a
    camera farther out or nearer in, without sampling behind it
    (:func:`nerf.models.render_image`)."""
    center, mean_distance = scene_center(around, (near + far) / 2)
    farther = np.linalg.norm(poses[:, :3, 3].astype(np.float64) - center, axis=-1) - mean_distance
    return np.maximum(farther, -near)


class PoseFile(NamedTuple):
    poses: np.ndarray  # (n, 4, 4) float32 camera-to-world
    names: tuple[str, ...]  # one per pose: its file_path (less an image extension) if given, else pose_<i>
    camera_angle_x: float | None  # horizontal field of view (radians) if the file gives one

    def focal(self, width: int, default: float) -> float:
        """Focal length in pixels for ``width``-pixel images: the file's field of view if it
        gives one, else ``default``."""
        return default if self.camera_angle_x is None else focal_from_angle(self.camera_angle_x, width)


def read_poses(path: str | Path) -> PoseFile:
    """Camera poses from a JSON file in the Blender ``transforms_*.json`` convention:
    ``{"camera_angle_x": 0.69, "frames": [{"transform_matrix": [[...4x4...]], "file_path": "a"}]}``;
    ``camera_angle_x`` and ``file_path`` are optional. Errors name the file and frame."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a JSON file of camera poses, such as a Blender "
                        "folder's transforms_test.json")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a JSON file of camera poses") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise DataError(f'{path}: expected {{"frames": [{{"transform_matrix": 4x4}}, ...]}} '
                        "with at least one frame")
    angle = meta.get("camera_angle_x")
    angle = None if angle is None else camera_angle(angle, path)
    poses, names = [], []
    for i, frame in enumerate(frames):
        where = f"{path}: frames[{i}]"
        matrix = frame.get("transform_matrix") if isinstance(frame, dict) else None
        poses.append(pose_from_json(matrix, where))
        name = frame.get("file_path")
        name = PurePosixPath(name) if isinstance(name, str) and name.strip("./") else None
        if name is not None and name.suffix.lower() in IMAGE_SUFFIXES:  # the image's, not the render's
            name = name.with_suffix("")
        names.append(name.as_posix() if name else f"pose_{i:03d}")  # "./r_0" -> "r_0"
    return PoseFile(np.stack(poses).astype(np.float32), tuple(names), None if angle is None else float(angle))
