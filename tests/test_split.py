"""The split stage: strategies, manifest, resizing, compositing, determinism, errors."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest
from conftest import run_script, write_params

from nerf.config import DataConfig, EvalConfig, SplitConfig
from nerf.download import download
from nerf.errors import ConfigError, DataError
from nerf.scene import Scene
from nerf.split import resize, split, split_indices, split_scene
from nerf.views import load_views, save_views


def make_scene(n: int = 10, h: int = 4, w: int = 6, channels: int = 3, subsets=None) -> Scene:
    rng = np.random.default_rng(1)
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n)
    return Scene(rng.random((n, h, w, channels), dtype=np.float32), poses, 5.0,
                 tuple(f"view_{i:03d}" for i in range(n)), tuple(subsets or [""] * n))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """The download stage's output for the shipped sample (80 views of 100x100)."""
    path = tmp_path_factory.mktemp("data") / "raw"
    download(DataConfig(), path)
    return path


@pytest.mark.parametrize(("config", "test"), [
    (SplitConfig(strategy="tail", test_fraction=0.2, val_views=0), [8, 9]),
    (SplitConfig(strategy="tail", test_fraction=0.01, val_views=0), [9]),
    (SplitConfig(strategy="tail", test_fraction=0.99, val_views=0), list(range(1, 10))),
    (SplitConfig(strategy="every_nth", every_nth=3, val_views=0), [0, 3, 6, 9]),
    (SplitConfig(strategy="tail", test_fraction=0.25, val_views=0), [8, 9]),  # 2.5 rounds to even
    (SplitConfig(strategy="tail", test_fraction=0.17, val_views=0), [8, 9]),  # 1.7 rounds up, not down
])
def test_fixed_strategies(config, test):
    train_idx, val_idx, test_idx = split_indices(make_scene(), config)
    assert test_idx.tolist() == test and val_idx.tolist() == []
    assert train_idx.tolist() == [i for i in range(10) if i not in test]


def test_a_scene_of_one_view_cannot_be_split():
    with pytest.raises(DataError, match=r"the scene has 1 view; a split needs at least 2"):
        split_indices(make_scene(n=1), SplitConfig(strategy="tail", val_views=0))


@pytest.mark.parametrize(("config", "val"), [
    (SplitConfig(strategy="tail", val_views=3), [0, 4, 7]),
    (SplitConfig(strategy="every_nth", every_nth=3, val_views=2), [1, 8]),
    (SplitConfig(strategy="every_nth", every_nth=3, val_views=1), [1]),
    (SplitConfig(strategy="tail", val_views=7), [0, 1, 2, 4, 5, 6, 7]),
])
def test_validation_views_are_spread_over_the_training_views(config, val):
    without = split_indices(make_scene(), dataclasses.replace(config, val_views=0))
    train, val_idx, test = split_indices(make_scene(), config)
    assert val_idx.tolist() == val
    assert train.tolist() == [i for i in without.train if i not in val]
    assert test.tolist() == without.test.tolist()


def test_validation_must_leave_a_training_view():
    expected = (r"split.val_views is 8, but only 8 views are left after the 2 test views "
                r"\(split.test_fraction 0.2, of 10 views\); at least one must stay for training")
    with pytest.raises(ConfigError, match=expected):
        split_indices(make_scene(), SplitConfig(strategy="tail", val_views=8))
    # The key that held out too many is named, whichever it is.
    with pytest.raises(ConfigError, match=r"after the 9 test views \(split.test_fraction 0.99, of 10"):
        split_indices(make_scene(), SplitConfig(strategy="tail", test_fraction=0.99))
    with pytest.raises(ConfigError, match=r"after the 5 test views \(split.every_nth 2, of 10"):
        split_indices(make_scene(), SplitConfig(strategy="every_nth", every_nth=2, val_views=5))


def test_random_strategy_is_seeded():
    scene = make_scene(n=50)
    config = SplitConfig(strategy="random", test_fraction=0.3, seed=7, val_views=5)
    train, val, test = split_indices(scene, config)
    assert len(test) == 15 and len(val) == 5 and len(train) == 30 and np.all(np.diff(test) > 0)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(50))
    assert split_indices(scene, config).test.tolist() == test.tolist()
    other = split_indices(scene, dataclasses.replace(config, seed=8)).test
    assert other.tolist() != test.tolist()


def test_official_strategy():
    subsets = ["train", "train", "val", "test", "train", "test", "val", "val"]
    scene = make_scene(n=8, subsets=subsets)
    train, val, test = split_indices(scene, SplitConfig(strategy="official", val_views=2))
    assert train.tolist() == [0, 1, 4] and val.tolist() == [2, 7] and test.tolist() == [3, 5]
    assert split_indices(scene, SplitConfig(strategy="official", val_views=0)).val.tolist() == []
    with pytest.raises(ConfigError, match=r"split.val_views is 4, but the source has 3 validation views"):
        split_indices(scene, SplitConfig(strategy="official", val_views=4))
    # Without transforms_val.json the validation views come from the training views.
    scene = make_scene(n=6, subsets=["train", "train", "test", "train", "test", "train"])
    train, val, test = split_indices(scene, SplitConfig(strategy="official", val_views=2))
    assert train.tolist() == [1, 3] and val.tolist() == [0, 5] and test.tolist() == [2, 4]
    with pytest.raises(ConfigError, match="official .* from transforms_train.json, transforms_val"):
        scene = make_scene(n=3, subsets=["train", "val", "train"])
        split_indices(scene, SplitConfig(strategy="official"))
    with pytest.raises(ConfigError, match="split.strategy official .* npz"):
        split_indices(make_scene(), SplitConfig(strategy="official"))


@pytest.mark.parametrize(("strategy", "names", "subsets", "expected"), [
    # An official split whose transforms_test.json lists a training image.
    ("official", ["train/r_0", "train/r_1", "train/r_2", "train/r_1", "test/r_4"],
     ["train", "train", "train", "test", "test"],
     (r"the source lists train/r_1 in transforms_train\.json and transforms_test\.json, and the split "
      r"makes it both a training and a test view: .* list each image once")),
    # ... or whose transforms_val.json does.
    ("official", ["train/r_0", "train/r_1", "train/r_1", "test/r_4"], ["train", "train", "val", "test"],
     r"lists train/r_1 in transforms_train\.json and transforms_val\.json, .* training and a validation"),
    # Any strategy: one file listed twice in transforms_train.json, a copy of it drawn for testing.
    ("every_nth", ["train/r_0", "train/r_1", "train/r_0", "train/r_3", "train/r_3", "train/r_5"],
     ["train"] * 6,
     r"lists train/r_0 \(and 1 more\) in transforms_train\.json \(2 times\), .* training and a test"),
])
def test_a_view_listed_twice_is_not_both_trained_and_scored(strategy, names, subsets, expected):
    scene = dataclasses.replace(make_scene(n=len(names), subsets=subsets), names=tuple(names))
    config = SplitConfig(strategy=strategy, every_nth=3, val_views=1)
    with pytest.raises(DataError, match=expected):
        split_indices(scene, config)
    # The same views under their own names split as before.
    unique = split_indices(make_scene(n=len(names), subsets=subsets), config)
    assert sorted(np.concatenate(unique).tolist()) == list(range(len(names)))


def test_stage_script_refuses_a_blender_folder_that_tests_on_a_training_image(tmp_path, make_blender):
    folder = make_blender(tmp_path / "lego", {"train": [0, 1, 3], "test": [2]})
    path = folder / "transforms_test.json"
    meta = json.loads(path.read_text())
    train = json.loads((folder / "transforms_train.json").read_text())
    meta["frames"].append(train["frames"][1])  # ./train/r_1
    path.write_text(json.dumps(meta))
    download(DataConfig(source=str(folder)), tmp_path / "data" / "raw")
    write_params(tmp_path, split={"strategy": "official", "val_views": 1})
    result = run_script("split.py", "--raw", "data/raw", "--out", "data/split", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        ("error: the source lists train/r_1 in transforms_train.json and transforms_test.json, and the "
         "split makes it both a training and a test view: its test score would be of a view the model "
         "trained on; list each image once")]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["raw"]  # no split, no temporary


def test_validation_views_may_repeat_test_views():
    # Some exporters write transforms_val.json as a copy of transforms_test.json: validating on
    # the test views chooses nothing, and no training view is scored.
    names = ("train/r_0", "train/r_1", "test/r_2", "test/r_3", "test/r_2", "test/r_3")
    scene = dataclasses.replace(make_scene(n=6, subsets=["train"] * 2 + ["test"] * 2 + ["val"] * 2),
                                names=names)
    train, val, test = split_indices(scene, SplitConfig(strategy="official", val_views=2))
    assert train.tolist() == [0, 1] and val.tolist() == [4, 5] and test.tolist() == [2, 3]


def test_resize_is_a_block_mean():
    images = make_scene(n=2, h=6, w=9).images
    out = resize(images, 3)
    block = images.reshape(2, 2, 3, 3, 3, 3).mean(axis=(2, 4))
    assert out.shape == (2, 2, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, block, atol=1e-6)
    assert resize(images, 4).shape == (2, 3, 4, 3)  # height by aspect ratio: 6 * 4/9 -> 3
    with pytest.raises(ConfigError, match="split.image_size 10 exceeds"):
        resize(images, 10)


def test_resize_averages_the_area_each_pixel_covers_at_any_scale():
    # 3 -> 2 columns: each output pixel covers one and a half source pixels.
    middle, left = np.zeros((1, 1, 3, 1), np.float32), np.zeros((1, 1, 3, 1), np.float32)
    middle[..., 1, :], left[..., 0, :] = 1.0, 1.0
    np.testing.assert_allclose(resize(np.repeat(middle, 3, axis=1), 2)[0, 0, :, 0], [1 / 3, 1 / 3], atol=1e-7)
    np.testing.assert_allclose(resize(np.repeat(left, 3, axis=1), 2)[0, 0, :, 0], [2 / 3, 0.0], atol=1e-7)
    # Any scale keeps the mean (every source pixel counts by the area it covers), here 2.5
    # source pixels an output pixel on both axes.
    images = make_scene(n=2, h=5, w=10, channels=4).images
    out = resize(images, 4)
    assert out.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-6)


@pytest.mark.parametrize(("h", "w", "width"), [(30, 40, 7), (29, 40, 7), (40, 30, 7), (60, 80, 50)])
def test_resized_pixels_show_what_their_rays_see(h, w, width):
    # Each pixel's rays (one focal for both axes, principal point at the centre) must meet the
    # source where its value came from. Source values are the pixel-centre coordinates; a box
    # filter averages them to the centre of each output pixel's span, to within 1/8 of a
    # source pixel over the span's length (the partial pixels at its ends). Where the height
    # rounds (30 x 40 at 7 columns: 5.25 rows -> 5), a row must span as many source rows as a
    # column spans source columns (40/7), not 30/5: 0.57 source rows off at the edges.
    scene = make_scene(n=2, h=h, w=w, channels=3)
    rows, columns = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    scene.images[:] = np.stack([rows / h, columns / w, np.zeros_like(rows)], axis=-1)
    views = split_scene(scene, SplitConfig(strategy="tail", test_fraction=0.5, image_size=width,
                                           val_views=0))[0]["test"]
    height = views.height
    scale = scene.focal / views.focal  # source pixels an output pixel, at the source's focal
    tolerance = 0.125 / scale + 1e-5 * max(h, w)
    i = np.arange(height) + 0.5
    seen = h / 2 + (i - height / 2) * scale  # the source row each output row's rays meet
    inside = (seen - scale / 2 >= 0) & (seen + scale / 2 <= h)  # rows whose span the source holds
    assert inside.sum() >= height - 2
    np.testing.assert_allclose(views.images[0, inside, 0, 0] * h, seen[inside], rtol=0, atol=tolerance)
    j = np.arange(width) + 0.5
    np.testing.assert_allclose(views.images[0, 0, :, 1] * w, w / 2 + (j - width / 2) * scale,
                               rtol=0, atol=tolerance)


def test_resize_scales_focal():
    parts, manifest = split_scene(make_scene(h=8, w=12), SplitConfig(image_size=3))
    assert all((v.width, v.height, v.focal) == (3, 2, 5.0 / 4) for v in parts.values())
    assert manifest["image_size"] == {"width": 3, "height": 2} and manifest["focal"] == 1.25
    # Where the height rounds (6 * 5/8 = 3.75 -> 4), the focal still follows the width, which
    # resizes exactly: pixels are square in the source, and 5/8 of them span the same angle.
    parts, _ = split_scene(make_scene(h=6, w=8), SplitConfig(image_size=5))
    assert all((v.width, v.height) == (5, 4) for v in parts.values())
    assert all(v.focal == pytest.approx(5.0 * 5 / 8) for v in parts.values())


@pytest.mark.parametrize(("background", "expected"), [
    ("black", [0.2, 0.1, 0.05]), ("white", [0.95, 0.85, 0.8]),
])
def test_background_compositing(background, expected):
    scene = make_scene(n=3, h=1, w=1, channels=4)
    scene.images[:] = [0.8, 0.4, 0.2, 0.25]
    parts, manifest = split_scene(scene, SplitConfig(background=background, val_views=1))
    for views in parts.values():
        np.testing.assert_allclose(views.images[0, 0, 0], expected, atol=1e-6)
        assert views.images.shape == (1, 1, 1, 3)
        assert views.background.tolist() == ([1.0] * 3 if background == "white" else [0.0] * 3)
    assert manifest["background"] == background


def test_rgba_source_keeps_its_resized_coverage_which_recomposites_exactly(tmp_path):
    # Area averaging is linear: the white split, moved onto black with its resized alpha,
    # equals the black split; alpha survives save and load, and subsets follow the views.
    scene = make_scene(n=4, h=4, w=6, channels=4)
    white_parts, _ = split_scene(scene, SplitConfig(background="white", image_size=3, val_views=0))
    white, white_test = white_parts["train"], white_parts["test"]
    black = split_scene(scene, SplitConfig(background="black", image_size=3, val_views=0))[0]["train"]
    assert white.alpha.shape == (3, 2, 3) and white_test.alpha.shape == (1, 2, 3)
    np.testing.assert_allclose(white.alpha, resize(scene.images[:3, ..., 3:], 3)[..., 0], atol=1e-7)
    moved = white.images + (1 - white.alpha[..., None]) * (black.background - white.background)
    np.testing.assert_allclose(moved, black.images, atol=1e-6)
    save_views(tmp_path / "v.npz", white)
    loaded = load_views(tmp_path / "v.npz")
    np.testing.assert_array_equal(loaded.alpha, white.alpha)
    np.testing.assert_array_equal(loaded.subset([2, 0]).alpha, white.alpha[[2, 0]])


def test_rgb_source_has_no_coverage_and_its_file_no_alpha(tmp_path):
    train = split_scene(make_scene(), SplitConfig())[0]["train"]
    assert train.alpha is None
    save_views(tmp_path / "v.npz", train)
    with np.load(tmp_path / "v.npz") as data:
        assert "alpha" not in data.files
    assert load_views(tmp_path / "v.npz").alpha is None


def test_alpha_of_the_wrong_shape_is_named(tmp_path):
    views = split_scene(make_scene(n=4, channels=4), SplitConfig(val_views=0))[0]["train"]
    save_views(tmp_path / "v.npz", dataclasses.replace(views, alpha=views.alpha[:, :2]))
    with pytest.raises(DataError, match=r"v\.npz: alpha has shape \(3, 2, 6\), expected \(3, 4, 6\)"):
        load_views(tmp_path / "v.npz")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda v: {"names": ("a", "b", "c")}, r"3 names for 8 images"),
    (lambda v: {"images": v.images * 255}, r"images: expected colours in \[0, 1\]"),
    (lambda v: {"images": np.where(v.images > 0.5, np.nan, v.images)}, r"images: expected colours in"),
    (lambda v: {"images": v.images[..., 0]}, r"images has shape \(8, 4, 6\), expected \(views, height,"),
    (lambda v: {"poses": v.poses[:, :3]}, r"poses has shape \(8, 3, 4\), expected \(8, 4, 4\) finite"),
    (lambda v: {"poses": np.where(np.eye(4, dtype=bool), np.inf, v.poses)},
     r"poses has shape \(8, 4, 4\), expected \(8, 4, 4\) finite"),
    (lambda v: {"focal": 0.0}, r"focal is 0\.0, expected a positive number of pixels"),
    (lambda v: {"focal": float("inf")}, r"focal is inf, expected a positive number of pixels"),
    (lambda v: {"background": np.zeros(4, np.float32)}, r"background has shape \(4,\), expected \(3,\)"),
])
def test_a_split_file_whose_arrays_disagree_is_named(tmp_path, change, expected):
    views = split_scene(make_scene(), SplitConfig(val_views=0))[0]["train"]
    save_views(tmp_path / "v.npz", dataclasses.replace(views, **change(views)))
    with pytest.raises(DataError, match=rf"v\.npz: {expected}.*; rerun the split stage \(dvc repro -f"):
        load_views(tmp_path / "v.npz")
    save_views(tmp_path / "v.npz", views)  # the comparison can pass: the unchanged views load
    assert load_views(tmp_path / "v.npz").n_views == 8


@pytest.mark.parametrize("keep", [0, 200, -40], ids=["empty", "truncated", "last-bytes-cut"])
def test_a_damaged_split_file_is_named_not_a_traceback(tmp_path, keep):
    save_views(tmp_path / "v.npz", split_scene(make_scene(), SplitConfig())[0]["train"])
    data = (tmp_path / "v.npz").read_bytes()
    (tmp_path / "v.npz").write_bytes(data[:keep])
    expected = r"v\.npz: not a readable split file \(\w+.*\); rerun the split stage"
    with pytest.raises(DataError, match=expected):
        load_views(tmp_path / "v.npz")


def test_a_missing_or_foreign_split_file_says_what_to_run_or_what_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"train\.npz: file not found; run the split stage first"):
        load_views(tmp_path / "train.npz")
    views = split_scene(make_scene(), SplitConfig())[0]["train"]
    np.savez(tmp_path / "other.npz", images=views.images, poses=views.poses, focal=views.focal,
             names=np.array(views.names))  # no background: not written by the split stage
    with pytest.raises(DataError, match=r"other\.npz: missing arrays \['background'\]; not a split file"):
        load_views(tmp_path / "other.npz")


def test_rgb_source_keeps_black(capsys):
    scene = make_scene()
    parts, manifest = split_scene(scene, SplitConfig(background="white", val_views=0))
    train = parts["train"]
    np.testing.assert_array_equal(train.images, scene.images[:8])
    assert train.background.tolist() == [0, 0, 0] and manifest["background"] == "black"
    assert "note: split.background is white" in capsys.readouterr().err


def test_split_outputs_and_manifest(raw, tmp_path):
    config = SplitConfig(strategy="every_nth", every_nth=8, image_size=50)
    manifest = split(raw, tmp_path / "split", config)
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [
        "manifest.json", "test.npz", "train.npz", "val.npz"]
    assert json.loads((tmp_path / "split" / "manifest.json").read_text()) == manifest
    train, val, test = (load_views(tmp_path / "split" / f"{s}.npz") for s in ("train", "val", "test"))
    assert (train.n_views, val.n_views, test.n_views) == (66, 4, 10) and train.images.shape[1:] == (50, 50, 3)
    assert train.focal == val.focal == pytest.approx(138.8888789 / 2)
    assert manifest["params"] == dataclasses.asdict(config) and manifest["strategy"] == "every_nth"
    assert manifest["test"]["indices"] == list(range(0, 80, 8))
    assert manifest["val"]["indices"] == [1, 27, 53, 79]  # spread over the 70 views left
    for part, views in (("train", train), ("val", val), ("test", test)):
        assert manifest[part]["names"] == list(views.names)
        assert manifest[part]["count"] == views.n_views
    assert list(test.names) == [f"view_{i:03d}" for i in range(0, 80, 8)]
    assert len(set(train.names) | set(val.names) | set(test.names)) == 80


def test_no_validation_views_writes_an_empty_file(raw, tmp_path):
    split(raw, tmp_path / "split", SplitConfig(image_size=20, val_views=0))
    val = load_views(tmp_path / "split" / "val.npz")
    assert val.n_views == 0 and val.images.shape == (0, 20, 20, 3)
    assert load_views(tmp_path / "split" / "train.npz").n_views == 64


def test_split_is_deterministic(raw, tmp_path):
    config = SplitConfig(strategy="random", image_size=40, seed=3)
    split(raw, tmp_path / "a", config)
    split(raw, tmp_path / "b", config)
    for name in ("train.npz", "val.npz", "test.npz"):
        with zipfile.ZipFile(tmp_path / "a" / name) as a, \
                zipfile.ZipFile(tmp_path / "b" / name) as b:
            assert a.namelist() == b.namelist()
            assert all(a.read(n) == b.read(n) for n in a.namelist())
            # The files' own bytes too (DVC hashes them): no clock time in the members' headers.
            assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in a.infolist())
            assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in a.infolist())
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    manifest = (tmp_path / "a" / "manifest.json").read_text()
    assert manifest == (tmp_path / "b" / "manifest.json").read_text()


def test_stage_script_error_keeps_old_output(raw, tmp_path):
    out = tmp_path / "data" / "split"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text("old")
    write_params(tmp_path, split={"strategy": "official"})
    result = run_script("split.py", "--raw", str(raw), "--out", "data/split", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "split.strategy official" in lines[0]
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "old"
    assert len(list(out.parent.iterdir())) == 1  # no temporary leftovers
    write_params(tmp_path, split={"image_size": 20})
    # A folder of the user's own is not replaced (it would be deleted); the split's own is.
    (out / "notes.txt").write_text("important")
    result = run_script("split.py", "--raw", str(raw), "--out", "data/split", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: data/split: holds notes.txt, which writing this folder would")
    (out / "notes.txt").unlink()
    result = run_script("split.py", "--raw", str(raw), "--out", "data/split", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "60 train / 4 val / 16 test views of 20x20" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.npz", "train.npz", "val.npz"]


def test_views_too_small_for_the_ssim_window_are_refused_before_training(raw, tmp_path):
    min_side = EvalConfig().min_image_side  # 11-pixel window: 6
    split(raw, tmp_path / "ok", SplitConfig(image_size=min_side), min_side=min_side)
    with pytest.raises(ConfigError, match=r"split\.image_size 5 makes 5x5 views \(of the source's 100x100\), "
                                          r"too small for evaluate's SSIM window \(eval\.ssim_kernel\): "
                                          r"it needs at least 6 pixels on each side"):
        split(raw, tmp_path / "small", SplitConfig(image_size=5), min_side=min_side)
    assert not (tmp_path / "small").exists()

    # The stage checks against params.yaml's window: a smaller one fits 5 pixels.
    write_params(tmp_path, split={"image_size": 5})
    result = run_script("split.py", "--raw", str(raw), "--out", "split", cwd=tmp_path)
    assert result.returncode == 1 and "eval.ssim_kernel" in result.stderr
    write_params(tmp_path, split={"image_size": 5}, eval={"ssim_kernel": 5, "ssim_sigma": 0.5})
    result = run_script("split.py", "--raw", str(raw), "--out", "split", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_views(tmp_path / "split/test.npz").images.shape[1:] == (5, 5, 3)

    scene = make_scene(h=4, w=6)
    np.savez(tmp_path / "tiny.npz", images=scene.images, poses=scene.poses, focal=scene.focal)
    download(DataConfig(source=str(tmp_path / "tiny.npz")), tmp_path / "tiny")
    with pytest.raises(ConfigError, match=r"^the source's 6x4 views are too small for evaluate's SSIM"):
        split(tmp_path / "tiny", tmp_path / "small", SplitConfig(), min_side=min_side)
