"""Reading source scenes: the real tiny npz, the shipped sample, Blender folders."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import LEGO, REPO, shared_path, write_npz
from PIL import Image

from nerf.errors import DataError
from nerf.scene import blender_files, load_raw, load_scene


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


def test_a_file_path_with_an_image_extension_names_the_file_as_it_is(make_blender, tmp_path):
    # nerf_synthetic's "./train/r_0" means r_0.png; other exporters write "./train/r_0.jpg".
    folder = make_blender(tmp_path / "lego", {"train": [0, 1, 3]})
    with Image.open(folder / "train/r_1.png") as im:
        rgba = np.asarray(im, dtype=np.float32) / 255.0
        im.convert("RGB").save(folder / "train/r_1.jpg", quality=95)
    (folder / "train/r_1.png").unlink()
    (folder / "train/r_3.png").rename(folder / "train/r_3.v2.png")  # a dot, but no image extension
    path = folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][0]["file_path"] = "./train/r_0.PNG"  # the extension in capitals: still one
    (folder / "train/r_0.png").rename(folder / "train/r_0.PNG")
    meta["frames"][1]["file_path"] = "./train/r_1.jpg"
    meta["frames"][2]["file_path"] = "./train/r_3.v2"
    path.write_text(json.dumps(meta))
    scene = load_scene(folder)
    assert scene.names == ("train/r_0", "train/r_1", "train/r_3.v2")
    assert blender_files(folder) == ["transforms_train.json", "train/r_0.PNG", "train/r_1.jpg",
                                     "train/r_3.v2.png"]
    assert scene.images.shape == (3, 40, 40, 4) and (scene.images[1, ..., 3] == 1.0).all()  # JPEG: opaque
    assert np.abs(scene.images[1, ..., :3] - rgba[..., :3]).mean() < 0.02  # JPEG is lossy


def test_blender_non_square_frames_take_the_focal_from_their_width(make_blender, tmp_path):
    # camera_angle_x is the horizontal field of view: focal = width / 2 / tan(angle / 2).
    folder = make_blender(tmp_path / "lego", {"train": [0, 1]})
    for name in ("r_0", "r_1"):
        with Image.open(folder / f"train/{name}.png") as im:
            im.crop((0, 0, 40, 30)).save(folder / f"train/{name}.png")
    path = folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "camera_angle_x": 1}))  # a whole number of radians is one
    scene = load_scene(folder)
    assert scene.images.shape == (2, 30, 40, 4)
    assert scene.focal == pytest.approx(20 / math.tan(0.5))


def test_blender_palette_frames_keep_their_transparency(make_blender, tmp_path):
    # A palette PNG with a transparent colour (tRNS) is RGBA: its transparent pixels have alpha 0.
    folder = make_blender(tmp_path / "lego", {"train": [0, 1]})
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (10, 10, 30, 30))
    palette.save(folder / "train/r_1.png", transparency=0)
    frame = load_scene(folder).images[1]
    assert frame[0, 0, 3] == 0.0 and frame[20, 20, 3] == 1.0
    np.testing.assert_array_equal(frame[20, 20, :3], [1.0, 0.0, 0.0])


def test_blender_16_bit_grey_frames_keep_their_grey_levels(make_blender, tmp_path):
    folder = make_blender(tmp_path / "lego", {"train": [0, 1]})
    levels = np.linspace(0, 65535, 40 * 40).reshape(40, 40).astype(np.uint16)
    Image.fromarray(levels).save(folder / "train/r_1.png")  # mode I;16
    with Image.open(folder / "train/r_1.png") as im:
        assert im.mode.startswith("I")
    frame = load_scene(folder).images[1]
    expected = np.round(levels / 257.0) / 255.0
    np.testing.assert_allclose(frame[..., 0], expected, atol=1e-6)
    assert np.array_equal(frame[..., 0], frame[..., 2]) and (frame[..., 3] == 1.0).all()  # opaque


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
    with pytest.raises(DataError, match=r"scene\.npz: data\.format is blender, but this is a file; use auto, "
                                        r"or npz$"):
        load_scene(npz, "blender")
    with pytest.raises(DataError, match=r"data\.format is npz, but this is a folder; use auto, or blender$"):
        load_scene(tmp_path, "npz")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="notes.txt: unknown format"):
        load_scene(text)
    with pytest.raises(DataError, match="no transforms_train.json"):
        load_scene(tmp_path)


def _rigid(n: int, seed: int = 1) -> np.ndarray:
    """(n, 3, 4) random rotations (det +1) and translations."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, 3, 3)))
    q *= np.sign(np.linalg.det(q))[:, None, None]
    return np.concatenate([q, rng.standard_normal((n, 3, 1))], axis=-1).astype(np.float32)


def test_3x4_poses_get_the_homogeneous_bottom_row(tmp_path):
    poses = _rigid(4)
    scene = load_scene(write_npz(tmp_path / "scene.npz", poses=poses))
    assert scene.poses.shape == (4, 4, 4)
    np.testing.assert_array_equal(scene.poses[:, :3], poses)
    np.testing.assert_array_equal(scene.poses[:, 3], np.tile([0, 0, 0, 1], (4, 1)))


# Bad .npz contents: each message names the file, the array and what was expected.
BAD_NPZ = {
    "poses_scaled": ({"poses": np.concatenate([_rigid(3)[:2], 2 * _rigid(1, seed=2)])},
                     (r"poses\[2\]: its rotation is not one \(column lengths 2, 2, 2, determinant 8\): "
                      r"a scaled, sheared or mirrored camera; expected a rotation and a translation")),
    "poses_shape": ({"poses": np.zeros((4, 4), np.float32)},
                    r"poses: expected shape \(n, 4, 4\), got \(4, 4\)"),
    "int_images": ({"images": np.zeros((4, 6, 8, 3), np.int32)},
                   r"images: expected float images in \[0, 1\] or uint8, got int32"),
    "images_range": ({"images": np.full((4, 6, 8, 3), 1.5, np.float32)},
                     r"images: pixel values must lie in \[0, 1\], got \[1\.5, 1\.5\]"),
    "focal_text": ({"focal": np.array("wide")},
                   r"focal: expected a single positive number, got array\('wide'"),
    "focal_pair": ({"focal": np.array([10.0, 12.0])}, r"focal: expected a single positive number"),
    "focal_negative": ({"focal": np.float64(-1.0)}, r"focal: expected a single positive number, got -1\.0"),
    "focal_zero": ({"focal": np.float64(0.0)}, r"focal: expected a single positive number, got 0\.0"),
    "empty_images": ({"images": np.zeros((0, 6, 8, 3), np.float32), "poses": np.zeros((0, 4, 4))},
                     r"images: expected shape \(n, h, w, 3 or 4\), got \(0, 6, 8, 3\)"),
    # One pose per image, either way round.
    "more_poses": ({"poses": np.tile(np.eye(4, dtype=np.float32), (5, 1, 1))},
                   r"4 images but 5 poses; expected one pose per image"),
    "fewer_poses": ({"poses": np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))},
                    r"4 images but 3 poses; expected one pose per image"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_contents_name_the_file_and_the_array(case, tmp_path):
    arrays, expected = BAD_NPZ[case]
    with pytest.raises(DataError, match=r"scene\.npz: " + expected):
        load_scene(write_npz(tmp_path / "scene.npz", **arrays))


def test_unreadable_npz_and_unknown_or_missing_paths(tmp_path):
    text = tmp_path / "scene.npz"
    text.write_text("not a zip")
    with pytest.raises(DataError, match=r"scene\.npz: not a readable \.npz file"):
        load_scene(text, "npz")
    expected = r"scene\.npz: unknown format 'ply'; expected one of auto, npz, blender"
    with pytest.raises(DataError, match=expected):
        load_scene(text, "ply")
    with pytest.raises(DataError, match=r"gone: file or folder not found"):
        load_scene(tmp_path / "gone")


def _first(meta: dict) -> dict:
    return meta["frames"][0]


# Bad transforms_train.json contents: (edit of its parsed JSON, expected message after
# "transforms_train.json: ").
BAD_TRANSFORMS = {
    "angle_too_wide": (lambda m: m.update(camera_angle_x=4.0),
                       r"camera_angle_x must be an angle in \(0, pi\) radians, got 4\.0"),
    "angle_zero": (lambda m: m.update(camera_angle_x=0), r"camera_angle_x must be an angle .* got 0$"),
    "angle_bool": (lambda m: m.update(camera_angle_x=True), r"camera_angle_x must be an angle .* got True"),
    "frames_not_list": (lambda m: m.update(frames={"r_0": {}}), r"expected a list of frames"),
    "no_file_path": (lambda m: m["frames"][1].pop("file_path"), r"frames\[1\]: expected a file_path string"),
    "file_path_dot": (lambda m: m["frames"][1].update(file_path="./"),
                      r"frames\[1\]: expected a file_path string"),
    "file_path_outside": (lambda m: _first(m).update(file_path="../x/r_0"),
                          r"frames\[0\]: file_path '\.\./x/r_0' must lie inside the folder"),
    "matrix_shape": (lambda m: _first(m).update(transform_matrix=[[1, 2]]),
                     r"frames\[0\]: expected transform_matrix as a 4x4 \(or 3x4\) list of numbers"),
    "matrix_text": (lambda m: _first(m).update(transform_matrix=[["a"] * 4] * 4),
                    r"frames\[0\]: expected transform_matrix as a 4x4 \(or 3x4\) list of numbers"),
    "matrix_huge": (lambda m: _first(m)["transform_matrix"][0].__setitem__(0, 10**400),
                    r"frames\[0\]: expected transform_matrix as a 4x4 \(or 3x4\) list of numbers"),
    "matrix_nan": (lambda m: _first(m)["transform_matrix"][0].__setitem__(0, math.nan),
                   r"frames\[0\]: transform_matrix must be finite"),
    "matrix_singular": (lambda m: _first(m).update(transform_matrix=[[0.0] * 4] * 3 + [[0, 0, 0, 1]]),
                        r"frames\[0\]: transform_matrix has a singular rotation; expected camera-to-world"),
    "matrix_scaled": (lambda m: _first(m).update(transform_matrix=np.diag([2.0, 2, 2, 1]).tolist()),
                      r"frames\[0\]: transform_matrix: its rotation is not one \(column lengths 2, 2, 2"),
    "matrix_last_row": (lambda m: _first(m).update(transform_matrix=np.diag([1.0, 1, 1, 2]).tolist()),
                        r"frames\[0\]: transform_matrix: its last row is \[0\.0, 0\.0, 0\.0, 2\.0\]"),
    "matrix_sheared": (lambda m: _first(m).update(
                           transform_matrix=[[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]),
                       (r"frames\[0\]: transform_matrix: its rotation is not one \(column lengths 1, 1\.12, "
                        r"1, determinant 1\): a scaled, sheared or mirrored camera")),
    "matrix_mirrored": (lambda m: _first(m).update(transform_matrix=np.diag([-1.0, 1, 1, 1]).tolist()),
                        r"frames\[0\]: transform_matrix: its rotation is not one .*determinant -1\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRANSFORMS))
def test_bad_transforms_name_the_file_the_frame_and_the_problem(case, tmp_path, make_blender):
    folder = make_blender(tmp_path / "lego")
    load_scene(folder)  # readable before the edit
    edit, expected = BAD_TRANSFORMS[case]
    path = folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"lego/transforms_train\.json: " + expected):
        load_scene(folder)


def _no_frames(folder) -> None:
    (folder / "transforms_test.json").unlink()
    path = folder / "transforms_train.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "frames": []}))


def _second_camera(folder) -> None:
    path = folder / "transforms_test.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "camera_angle_x": meta["camera_angle_x"] + 0.1}))


# Bad Blender folders: (change to the folder, expected message).
BAD_FOLDERS = {
    "not_utf8": (lambda f: (f / "transforms_train.json").write_bytes(b"\xff\xfe{"),
                 r"transforms_train\.json: cannot read"),
    "angles_differ": (_second_camera,
                      r"lego: camera_angle_x differs between transforms_train\.json, transforms_test\.json"),
    "no_frames": (_no_frames, r"lego: transforms_train\.json list no frames"),
    "png_garbage": (lambda f: (f / "train/r_1.png").write_bytes(b"\x89PNG garbage"),
                    r"train/r_1\.png \(frame of transforms_train\.json\): not a readable image"),
    "png_size": (lambda f: Image.new("RGBA", (20, 30)).save(f / "test/r_2.png"),
                 (r"test/r_2\.png \(frame of transforms_test\.json\): size 20x30 differs from "
                  r"the first frame's 40x40")),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_blender_folders_name_the_file_and_the_problem(case, tmp_path, make_blender):
    folder = make_blender(tmp_path / "lego")
    load_scene(folder)  # readable before the change
    change, expected = BAD_FOLDERS[case]
    change(folder)
    with pytest.raises(DataError, match=expected):
        load_scene(folder)


def test_raw_folder_without_or_with_a_bad_source_record(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(DataError, match=r"raw/source\.json: file not found; run the download stage first"):
        load_raw(raw)
    (raw / "source.json").write_text('{"kind": "npz"}')
    with pytest.raises(DataError, match=r"raw/source\.json: expected JSON with a format key"):
        load_raw(raw)
