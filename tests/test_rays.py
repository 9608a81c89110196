"""Pinhole rays: pixel centres, the OpenGL convention, world rays and projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from nerf.rays import (
    Rays,
    camera_directions,
    focal_from_angle,
    image_rays,
    project,
    rays_from_pixels,
    scaled_camera,
)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """Camera-to-world (4, 4), OpenGL: the camera's -z axis points from ``eye`` to ``target``."""
    eye, target, up = (torch.tensor(v, dtype=torch.float32) for v in (eye, target, up))
    back = eye - target
    back = back / back.norm()
    right = torch.linalg.cross(up, back)
    right = right / right.norm()
    true_up = torch.linalg.cross(back, right)
    pose = torch.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, back, eye
    return pose


def real_pose() -> torch.Tensor:
    """A training camera of the real lego data, or a look-at pose where the data is absent."""
    path = SHARED_DATA / "tiny_lego.npz"
    if path.exists():
        with np.load(path) as data:
            return torch.from_numpy(data["poses"][3].astype(np.float32))
    return look_at((1.0, -3.5, 2.0), (0.0, 0.0, 0.0))


def test_pixel_centres_centre_and_corners() -> None:
    h, w, f = 5, 7, 3.0
    dirs = camera_directions(h, w, f)
    assert dirs.shape == (h, w, 3)
    # The centre pixel of an odd-sized image looks exactly down the optical axis.
    assert dirs[2, 3].tolist() == [0.0, 0.0, -1.0]
    # Corner pixel (row 0, column 0) centre at (0.5, 0.5): ((0.5 - w/2)/f, -(0.5 - h/2)/f, -1).
    assert dirs[0, 0].tolist() == pytest.approx([(0.5 - w / 2) / f, -(0.5 - h / 2) / f, -1.0])
    assert dirs[0, 0].tolist() == pytest.approx([-1.0, 2.0 / 3.0, -1.0])
    assert dirs[h - 1, w - 1].tolist() == pytest.approx([1.0, -2.0 / 3.0, -1.0])
    # Neighbouring pixels are 1/f apart; every direction has camera-space z = -1.
    assert torch.allclose(dirs[:, 1:, 0] - dirs[:, :-1, 0], torch.full((h, w - 1), 1 / f))
    assert torch.allclose(dirs[1:, :, 1] - dirs[:-1, :, 1], torch.full((h - 1, w), -1 / f))
    assert torch.all(dirs[..., 2] == -1.0)


def test_focal_from_the_horizontal_field_of_view() -> None:
    # Half the width over the tangent of half the angle: a 90-degree camera has its edge
    # columns at 45 degrees, so focal = width / 2.
    assert focal_from_angle(math.pi / 2, 800) == pytest.approx(400.0)
    assert focal_from_angle(2 * math.atan(0.5), 100) == pytest.approx(100.0)
    # The image's edge (half the width off the axis) is then half the field of view off it.
    angle = 0.6911112070083618  # the Blender lego's camera_angle_x
    assert math.atan(32 / focal_from_angle(angle, 64)) == pytest.approx(angle / 2)


def test_a_scaled_camera_keeps_the_aspect_and_the_field_of_view() -> None:
    assert scaled_camera(100, 100, 138.9, 50) == (50, 50, pytest.approx(69.45))
    # Non-square: 6 rows x 8 columns at 5 columns: 3.75 rows round to 4; the focal follows the
    # width, whose ratio is exact (a video or split of a 4:3 source).
    assert scaled_camera(6, 8, 10.0, 5) == (4, 5, pytest.approx(6.25))
    assert scaled_camera(8, 6, 10.0, 3) == (4, 3, pytest.approx(5.0))
    assert scaled_camera(1, 100, 10.0, 10)[0] == 1  # never zero rows
    assert scaled_camera(6, 8, 10.0, 16) == (12, 16, pytest.approx(20.0))  # up, for a bigger video


def test_even_size_has_no_pixel_on_the_axis_but_is_symmetric() -> None:
    dirs = camera_directions(4, 6, 2.0)
    # The four central pixels sit half a pixel off the axis, in each direction.
    assert dirs[1, 2, :2].tolist() == pytest.approx([-0.25, 0.25])
    assert dirs[2, 3, :2].tolist() == pytest.approx([0.25, -0.25])
    assert torch.allclose(dirs[..., 0], -dirs.flip(1)[..., 0])
    assert torch.allclose(dirs[..., 1], -dirs.flip(0)[..., 1])


def test_opengl_convention_row_zero_is_top_column_zero_is_left() -> None:
    dirs = camera_directions(9, 9, 4.0)
    assert torch.all(dirs[0, :, 1] > 0)  # top row looks up (+y)
    assert torch.all(dirs[-1, :, 1] < 0)
    assert torch.all(dirs[:, 0, 0] < 0)  # left column looks left (-x)
    assert torch.all(dirs[:, -1, 0] > 0)
    # A point above and to the right of the axis, in front of an identity camera (which
    # looks down -z), lands in the top-right part of the image, in front (depth > 0).
    xy, depth = project(torch.tensor([[0.5, 0.25, -2.0]]), torch.eye(4), 4.0, 9, 9)
    assert xy[0].tolist() == pytest.approx([4.5 + 4.0 * 0.25, 4.5 - 4.0 * 0.125])
    assert depth.tolist() == pytest.approx([2.0])


def test_a_point_behind_the_camera_projects_with_negative_depth() -> None:
    # Mirrored through the camera centre: the same pixel's ray, taken backwards (t < 0).
    xy, depth = project(torch.tensor([[-0.5, -0.25, 2.0]]), torch.eye(4), 4.0, 9, 9)
    assert depth.tolist() == pytest.approx([-2.0])
    assert xy[0].tolist() == pytest.approx([4.5 + 4.0 * 0.25, 4.5 - 4.0 * 0.125])


def test_image_rays_of_a_real_pose() -> None:
    pose = real_pose()
    h, w, f = 5, 7, 138.88887889922103 / 100 * 7  # the data's field of view, at 7 px
    rays = image_rays(pose, h, w, f)
    assert isinstance(rays, Rays) and len(rays) == h * w
    assert rays.origins.shape == (h * w, 3) and rays.directions.shape == (h * w, 3)
    # Every ray starts at the camera centre.
    assert torch.equal(rays.origins, pose[:3, 3].expand(h * w, 3))
    # Row-major: ray i * w + j goes through pixel (i, j); the centre pixel looks along the
    # camera's -z axis (the pose's third column, negated).
    centre = rays.directions[2 * w + 3]
    assert torch.allclose(centre, -pose[:3, 2], atol=1e-6)
    corner_cam = torch.tensor([(0.5 - w / 2) / f, -(0.5 - h / 2) / f, -1.0])
    assert torch.allclose(rays.directions[0], pose[:3, :3] @ corner_cam, atol=1e-6)
    # The lego cameras look at the origin: the centre ray passes (close to) it, in front.
    o = pose[:3, 3]
    t_closest = -(o @ centre) / (centre @ centre)
    assert t_closest > 0
    assert (o + t_closest * centre).norm() < 0.02 * o.norm()
    # Second route: projecting a point at depth 3 on each ray gives back its pixel centre.
    xy, depth = project(rays.origins + 3.0 * rays.directions, pose, f, h, w)
    jj, ii = torch.meshgrid(torch.arange(w) + 0.5, torch.arange(h) + 0.5, indexing="xy")
    assert torch.allclose(xy, torch.stack([jj, ii], dim=-1).reshape(-1, 2).float(), atol=1e-4)
    assert torch.allclose(depth, torch.full((h * w,), 3.0), atol=1e-5)


def test_batched_poses_broadcast_like_one_pose_at_a_time() -> None:
    poses = torch.stack([real_pose(), look_at((2.0, 2.0, 1.0), (0.0, 0.0, 0.5))])
    dirs = camera_directions(3, 4, 5.0)
    batched = rays_from_pixels(poses[:, None, None], dirs[None])
    assert len(batched) == 2 * 12
    for k in range(2):
        single = image_rays(poses[k], 3, 4, 5.0)
        assert torch.allclose(batched.origins[k * 12 : (k + 1) * 12], single.origins)
        assert torch.allclose(batched.directions[k * 12 : (k + 1) * 12], single.directions)
    # Rays index like a tensor.
    sub = batched[torch.tensor([0, 13])]
    assert torch.equal(sub.directions, batched.directions[[0, 13]])


@pytest.mark.parametrize("use_real_pose", [True, False])
def test_ray_through_projected_point_passes_through_it(use_real_pose: bool) -> None:
    pose = real_pose() if use_real_pose else look_at((0.3, -2.0, 4.0), (0.1, 0.2, 0.0), up=(0, 1, 0))
    h, w, f = 40, 60, 50.0
    gen = torch.Generator().manual_seed(3)
    points = torch.rand(32, 3, generator=gen) * 2 - 1  # in the unit cube around the origin
    xy, depth = project(points, pose, f, h, w)
    assert torch.all(depth > 0)
    # camera_directions' formula at the fractional pixel coordinate (x, y).
    dirs = torch.stack([(xy[:, 0] - w / 2) / f, -(xy[:, 1] - h / 2) / f, -torch.ones(32)], dim=-1)
    rays = rays_from_pixels(pose, dirs)
    hit = rays.origins + depth[:, None] * rays.directions
    assert (hit - points).norm(dim=-1).max() < 1e-4
    # And t is the depth along the optical axis: the distance along the unit optical axis.
    axis = -pose[:3, 2]
    assert torch.allclose((points - pose[:3, 3]) @ axis, depth, atol=1e-5)
    # Pixel centres of an image: camera_directions at integer pixels equals the formula.
    grid = camera_directions(h, w, f)
    assert torch.allclose(grid[7, 11], torch.tensor([(11.5 - w / 2) / f, -(7.5 - h / 2) / f, -1.0]))


def test_rays_to_device_keeps_values() -> None:
    rays = Rays(torch.zeros(2, 3), torch.ones(2, 3))
    moved = rays.to("cpu")
    assert torch.equal(moved.origins, rays.origins) and torch.equal(moved.directions, rays.directions)
    assert math.isclose(float(moved.directions.sum()), 6.0)
