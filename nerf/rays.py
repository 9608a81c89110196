"""Pinhole cameras and the rays through their pixel centres.

Convention (the NeRF data sets', OpenGL): in camera space x points right, y up and the
camera looks down -z. Ray directions are *not* normalised: a direction has camera-space
z = -1, so the ray parameter ``t`` is depth along the optical axis and ``near``/``far``
are depths.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class Rays(NamedTuple):
    origins: Tensor  # (n_rays, 3)
    directions: Tensor  # (n_rays, 3), camera-space z = -1 (not unit length)

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, index) -> Rays:  # type: ignore[override]
        return Rays(self.origins[index], self.directions[index])

    def to(self, device: torch.device | str) -> Rays:
        return Rays(self.origins.to(device), self.directions.to(device))


def focal_from_angle(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels of a camera ``width`` pixels wide with horizontal field of
    view ``camera_angle_x`` radians (the Blender files' convention)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def scaled_camera(height: int, width: int, focal: float, new_width: int) -> tuple[int, int, float]:
    """(height, width, focal) of a camera's images scaled to ``new_width`` pixels across: the
    height by the aspect ratio, rounded (at least 1); the focal by the width's exact ratio,
    for both axes (:func:`nerf.split.resize` samples the rows at the columns' scale)."""
    return max(1, round(height * new_width / width)), new_width, focal * new_width / width


def camera_directions(
    height: int, width: int, focal: float, device: torch.device | str = "cpu"
) -> Tensor:
    """Camera-space directions through pixel centres: (height, width, 3).

    Pixel (row i, column j) has its centre at (j + 0.5, i + 0.5); the principal point is
    the image centre (width / 2, height / 2).
    """
    j = torch.arange(width, dtype=torch.float32, device=device) + 0.5
    i = torch.arange(height, dtype=torch.float32, device=device) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    x = (jj - width / 2) / focal
    y = -(ii - height / 2) / focal
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def rays_from_pixels(
    poses: Tensor, directions: Tensor
) -> Rays:
    """World-space rays for camera-space ``directions``.

    poses:      (..., 4, 4) camera-to-world, broadcast against directions' leading dims
    directions: (..., 3) camera space
    """
    rotation = poses[..., :3, :3]
    world = (rotation @ directions.unsqueeze(-1)).squeeze(-1)
    origins = poses[..., :3, 3].expand_as(world)
    return Rays(origins.reshape(-1, 3), world.reshape(-1, 3))


def image_rays(pose: Tensor, height: int, width: int, focal: float) -> Rays:
    """All rays of one image, row-major: (height * width) rays. pose: (4, 4)."""
    directions = camera_directions(height, width, focal, pose.device)
    return rays_from_pixels(pose, directions)


def project(points: Tensor, pose: Tensor, focal: float, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Projects world points into a camera: returns pixel coordinates (n, 2) as (x, y)
    with pixel centres at half-integers, and depths (n,) along the optical axis.

    points: (n, 3); pose: (4, 4) camera-to-world.
    """
    rotation, centre = pose[:3, :3], pose[:3, 3]
    camera = (points - centre) @ rotation  # world -> camera: R^T (p - c)
    depth = -camera[:, 2]
    x = camera[:, 0] / depth * focal + width / 2
    y = -camera[:, 1] / depth * focal + height / 2
    return torch.stack([x, y], dim=-1), depth
