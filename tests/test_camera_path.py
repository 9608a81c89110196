"""Novel camera poses: look-at, orbit and spiral paths, the scene centre, pose files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nerf.camera_path import depth_shifts, look_at, look_target, orbit, read_poses, video_path
from nerf.errors import DataError
from nerf.rays import project


def _projects_to_centre(pose: np.ndarray, target: np.ndarray) -> None:
    pixel, depth = project(torch.tensor(target[None], dtype=torch.float32), torch.from_numpy(pose).float(),
                           50.0, 40, 60)
    assert pixel[0].tolist() == pytest.approx([30.0, 20.0], abs=1e-4)
    assert float(depth[0]) == pytest.approx(np.linalg.norm(pose[:3, 3] - target), rel=1e-5)


def test_look_at_puts_the_target_at_the_image_centre_upright() -> None:
    eye, target = np.array([3.0, -2.0, 1.5]), np.array([0.2, 0.1, -0.3])
    pose = look_at(eye, target)
    assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-12)
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    assert np.allclose(pose[:3, 3], eye)
    _projects_to_centre(pose, target)
    # Upright: the image's x axis is horizontal and its up axis points to +z.
    assert abs(pose[2, 0]) < 1e-12 and pose[2, 1] > 0
    # Straight down the z axis still gives a valid rotation.
    down = look_at(np.array([0.0, 0.0, 4.0]), np.zeros(3))
    assert np.linalg.det(down[:3, :3]) == pytest.approx(1.0)
    _projects_to_centre(down, np.zeros(3))


@pytest.mark.parametrize("turns", [1.0, 2.0, 0.5])
def test_orbit_circles_the_centre_at_radius_and_elevation(turns: float) -> None:
    center = np.array([0.5, -0.2, 0.1])
    poses = orbit(12, 4.0, 30.0, center, turns=turns)
    offsets = poses[:, :3, 3] - center
    assert np.allclose(np.linalg.norm(offsets, axis=-1), 4.0, atol=1e-5)
    assert np.allclose(np.degrees(np.arcsin(offsets[:, 2] / 4.0)), 30.0, atol=1e-3)
    azimuth = np.degrees(np.unwrap(np.arctan2(offsets[:, 1], offsets[:, 0])))
    # Evenly around, `turns` times over the path (one turn: not repeating frame 0).
    assert np.allclose(np.diff(azimuth), 30.0 * turns, atol=1e-3)
    for pose in poses:
        _projects_to_centre(pose.astype(np.float64), center)


@pytest.mark.parametrize("turns", [1.0, 2.0])
def test_spiral_swings_elevation_by_the_amplitude(turns: float) -> None:
    poses = orbit(40, 3.0, 20.0, np.zeros(3), amplitude=10.0, turns=turns)
    elevation = np.degrees(np.arcsin(poses[:, 2, 3] / 3.0))
    assert elevation.max() == pytest.approx(30.0, abs=0.1) and elevation.min() == pytest.approx(10.0, abs=0.1)
    # One swing up and down over the whole path, however many turns it makes.
    assert np.allclose(elevation, 20.0 + 10.0 * np.sin(2 * np.pi * np.arange(40) / 40), atol=1e-3)


def test_look_target_recovers_the_point_cameras_look_at() -> None:
    rng = np.random.default_rng(0)
    target = np.array([0.3, -0.4, 0.2])
    eyes = rng.normal(size=(10, 3)) * 3 + np.array([0, 0, 2])
    poses = np.stack([look_at(eye, target) for eye in eyes])
    assert np.allclose(look_target(poses, 3.0), target, atol=1e-9)
    # Parallel axes meet nowhere: the point 3 ahead of the cameras' centroid.
    parallel = np.stack([look_at(np.array([x, 0.0, 5.0]), np.array([x, 0.0, 0.0])) for x in (0.0, 1.0, 2.0)])
    assert np.allclose(look_target(parallel, 3.0), [1.0, 0.0, 2.0])
    # Two cameras facing each other along one line: no mean direction, their midpoint.
    facing = np.stack([look_at(np.array([0.0, 0.0, z]), np.array([0.0, 0.0, -z])) for z in (5.0, -3.0)])
    assert np.allclose(look_target(facing, 3.0), [0.0, 0.0, 1.0])


def test_video_path_defaults_to_the_cameras_distance() -> None:
    around = orbit(8, 4.0, 45.0, np.array([0.1, 0.2, 0.0]))
    path = video_path("spiral", 6, None, 10.0, 5.0, 1.0, around, 3.0)
    assert path.shape == (6, 4, 4)
    assert np.allclose(np.linalg.norm(path[:, :3, 3] - [0.1, 0.2, 0.0], axis=-1), 4.0, atol=1e-4)
    same_height = video_path("orbit", 6, 2.0, 10.0, 5.0, 1.0, around, 3.0)  # orbit ignores the amplitude
    assert np.allclose(same_height[:, 2, 3], 2.0 * math.sin(math.radians(10.0)), atol=1e-5)


def test_video_path_radius_is_the_cameras_mean_distance() -> None:
    # Two cameras looking at the origin from 2 and from 4 away: the orbit runs at 3.
    around = np.stack([look_at(np.array([2.0, 0.0, 0.0]), np.zeros(3)),
                       look_at(np.array([0.0, 4.0, 0.0]), np.zeros(3))])
    path = video_path("orbit", 5, None, 0.0, 0.0, 1.0, around, 1.0)
    assert np.allclose(np.linalg.norm(path[:, :3, 3], axis=-1), 3.0, atol=1e-5)


def test_video_path_around_one_camera_circles_the_point_it_looks_at() -> None:
    # One test view: no meeting point of axes; the orbit circles the point `distance` ahead.
    one = look_at(np.array([0.0, -4.0, 0.0]), np.zeros(3))[None]
    path = video_path("orbit", 4, None, 0.0, 0.0, 1.0, one, 4.0)
    assert np.allclose(np.linalg.norm(path[:, :3, 3], axis=-1), 4.0, atol=1e-5)
    assert np.allclose(path[:, 2, 3], 0.0, atol=1e-6)


def test_depth_shifts_are_the_distance_beyond_the_cameras_mean() -> None:
    # Two cameras looking at the origin from 2 and from 4 away (mean 3): a pose 8 away is 5
    # farther, one 1 away 2 nearer, whichever way it looks.
    around = np.stack([look_at(np.array([2.0, 0.0, 0.0]), np.zeros(3)),
                       look_at(np.array([0.0, 4.0, 0.0]), np.zeros(3))])
    poses = np.stack([look_at(np.array([0.0, 0.0, 8.0]), np.zeros(3)),
                      look_at(np.array([0.0, -1.0, 0.0]), np.array([0.0, -5.0, 0.0])),
                      *orbit(3, 3.0, 20.0, np.zeros(3))])
    np.testing.assert_allclose(depth_shifts(poses, around, 2.0, 6.0), [5.0, -2.0, 0.0, 0.0, 0.0], atol=1e-6)
    # Never so much nearer that it would sample behind the camera.
    np.testing.assert_allclose(depth_shifts(poses[:2], around, 1.5, 6.0), [5.0, -1.5], atol=1e-6)


def test_read_poses_blender_convention(tmp_path) -> None:
    pose = look_at(np.array([0.0, -4.0, 1.0]), np.zeros(3))
    path = tmp_path / "cams.json"
    path.write_text(json.dumps({"camera_angle_x": 0.7, "frames": [
        {"transform_matrix": pose.tolist(), "file_path": "./front"},
        {"transform_matrix": pose[:3].tolist()},
        {"transform_matrix": pose.tolist(), "file_path": "./test/r_1.png"},  # its render: r_1.png
        {"transform_matrix": pose.tolist(), "file_path": "shots/v1.2"},
    ]}))
    poses = read_poses(path)
    assert poses.camera_angle_x == 0.7 and poses.names == ("front", "pose_001", "test/r_1", "shots/v1.2")
    assert np.allclose(poses.poses, pose[None], atol=1e-6)
    assert poses.focal(100, default=7.0) == pytest.approx(50.0 / math.tan(0.35))
    path.write_text(json.dumps({"frames": [{"transform_matrix": pose.tolist()}]}))
    assert read_poses(path).camera_angle_x is None and read_poses(path).focal(100, default=7.0) == 7.0


@pytest.mark.parametrize(("content", "message"), [
    ("{", "malformed JSON"),
    ('{"frames": []}', "at least one frame"),
    ('[1, 2]', "at least one frame"),
    ('{"frames": [{"transform_matrix": [[1, 0], [0, 1]]}]}', "frames[0]: expected transform_matrix as a 4x4"),
    ('{"frames": [{"file_path": "a"}]}', "frames[0]: expected transform_matrix"),
    ('{"frames": [{"transform_matrix": [[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,1]]}]}', "singular rotation"),
    ('{"camera_angle_x": 4, "frames": [{"transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}',
     "camera_angle_x must be an angle"),
    ('{"camera_angle_x": 0, "frames": [{"transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}',
     "camera_angle_x must be an angle"),
])
def test_read_poses_names_the_file_and_what_is_wrong(tmp_path, content, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match="bad.json") as err:
        read_poses(path)
    assert message in str(err.value)


def test_read_poses_missing_file_or_a_folder(tmp_path) -> None:
    with pytest.raises(DataError, match="nope.json: file not found"):
        read_poses(tmp_path / "nope.json")
    with pytest.raises(DataError, match=r"^\S+/lego: is a folder; expected a JSON file of camera poses, "
                                        r"such as a Blender folder's transforms_test\.json$"):
        (tmp_path / "lego").mkdir()
        read_poses(tmp_path / "lego")
