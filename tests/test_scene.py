"""Reading source scenes: the real tiny npz, the shipped sample, Blender folders."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import LEGO, REPO, shared_path, write_npz

from nerf.errors import DataError
from nerf.scene import load_scene


def test_real_npz():
    scene = load_scene(shared_path("tiny_lego.npz"))
    assert scene.images.shape == (80, 100, 100, 3) and scene.images.dtype == np.float32
    assert scene.poses.shape == (80, 4, 4) and scene.poses.dtype == np.float32
    assert 0.0 <= scene.images.min() and scene.images.max() <= 1.0 and scene.images.max() > 0.5
    assert scene.focal == pytest.approx(138.8888789)
    assert scene.names[:2] == ("view_000", "view_001") and set(scene.subsets) == {""}


def test_shipped_sample_matches_source():
    sample = REPO / "assets" / "tiny_lego.npz"
    with np.load(sample) as data:
        assert data["images"].dtype == np.uint8
    assert sample.stat().st_size < 2_000_000
    shipped, source = load_scene(sample), load_scene(shared_path("tiny_lego.npz"))
    assert shipped.images.shape == source.images.shape
    assert np.abs(shipped.images - source.images).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_array_equal(shipped.poses, source.poses)
    assert shipped.focal == source.focal


def test_blender_small_folder(make_blender, tmp_path):
    folder = make_blender(tmp_path / "lego", {"train": [0, 1], "test": [2]})
    scene = load_scene(folder)
    assert scene.images.shape == (3, 40, 40, 4) and scene.images.dtype == np.float32
    alpha = scene.images[..., 3]
    assert alpha.min() == 0.0 and alpha.max() == 1.0
    assert scene.names == ("train/r_0", "train/r_1", "test/r_2")
    assert scene.subsets == ("train", "train", "test")
    meta = json.loads((folder / "transforms_test.json").read_text())
    assert scene.focal == pytest.approx(0.5 * 40 / math.tan(0.5 * meta["camera_angle_x"]))
    np.testing.assert_allclose(scene.poses[2], meta["frames"][0]["transform_matrix"], rtol=1e-6)


def test_blender_full_size_frames(tmp_path):
    meta = json.loads(shared_path("nerf_synthetic/lego/transforms_train.json").read_text())
    meta["frames"] = meta["frames"][:2]
    (tmp_path / "train").mkdir()
    for frame in meta["frames"]:
        shutil.copy(LEGO / f"{frame['file_path']}.png", tmp_path / "train")
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    scene = load_scene(tmp_path, "blender")
    assert scene.images.shape == (2, 800, 800, 4)
    assert scene.focal == pytest.approx(1111.111, rel=1e-4)
    assert scene.names == ("train/r_0", "train/r_1")


def test_format_mismatch_and_unknown(tmp_path):
    npz = write_npz(tmp_path / "scene.npz")
    with pytest.raises(DataError, match="format blender"):
        load_scene(npz, "blender")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="notes.txt: unknown format"):
        load_scene(text)
    with pytest.raises(DataError, match="no transforms_train.json"):
        load_scene(tmp_path)
