"""PNG io, file names, colormaps and comparison strips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nerf.errors import DataError
from nerf.images import (
    CAPTION_SIZES,
    caption_row,
    captioned,
    colorize,
    comparison,
    depth_image,
    downscale,
    enlarge,
    error_image,
    opacity_image,
    panels_row,
    read_png,
    scale_bar,
    to_uint8,
    view_filename,
    write_png,
)


def test_view_filename() -> None:
    assert view_filename(3, "train/r_12") == "003_train_r_12.png"
    assert view_filename(120, "r_0") == "120_r_0.png"
    # Whatever a pose file names its frames: a file name any file system takes.
    assert view_filename(1, "a\x00b c\\d:e") == "001_a_b_c_d_e.png"
    assert view_filename(2, "ü" * 300) == "002_" + "_" * 200 + ".png"
    with pytest.raises(ValueError):
        view_filename(-1, "x")


def test_to_uint8_rounds_and_clips() -> None:
    values = np.array([-0.5, 0.0, 0.5 / 255, 0.49 / 255, 1.51 / 255, 0.5, 1.0, 2.0, np.nan])
    assert to_uint8(values).tolist() == [0, 0, 0, 0, 2, 128, 255, 255, 0]
    assert to_uint8(values).dtype == np.uint8


def test_png_round_trip_float_uint8_and_grey(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((5, 7, 3)).astype(np.float32)
    write_png(tmp_path / "a.png", image)
    back = read_png(tmp_path / "a.png")
    assert back.shape == (5, 7, 3) and back.dtype == np.float32
    np.testing.assert_array_equal(to_uint8(back), to_uint8(image))
    assert np.abs(back - image).max() <= 0.5 / 255 + 1e-6

    raw = (rng.random((4, 6, 3)) * 255).astype(np.uint8)
    write_png(tmp_path / "sub" / "b.png", raw)
    np.testing.assert_array_equal(to_uint8(read_png(tmp_path / "sub" / "b.png")), raw)

    write_png(tmp_path / "g.png", np.full((3, 4), 1.0))
    np.testing.assert_array_equal(read_png(tmp_path / "g.png"), np.ones((3, 4, 3), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "g.png", "sub"]  # no temp files


def test_read_png_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.png: file not found"):
        read_png(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        read_png(tmp_path / "bad.png")


def test_pngs_with_alpha_and_arrays_of_other_shapes_are_refused(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 3)).save(tmp_path / "alpha.png")
    with pytest.raises(DataError, match=r"alpha\.png: image mode RGBA; expected an RGB or greyscale PNG"):
        read_png(tmp_path / "alpha.png")
    with pytest.raises(ValueError, match=r"\(h, w, 3\) image, got shape \(3, 4, 2\)"):
        write_png(tmp_path / "two.png", np.zeros((3, 4, 2)))
    assert not (tmp_path / "two.png").exists()
    write_png(tmp_path / "one.png", np.full((3, 4, 1), 0.5))  # one channel: written as grey
    np.testing.assert_array_equal(read_png(tmp_path / "one.png"), np.full((3, 4, 3), 128 / 255, np.float32))


def test_colorize_uses_the_colormap_ends() -> None:
    import matplotlib

    out = colorize(np.array([[2.0, 6.0, 10.0]]), 2.0, 6.0, "viridis")
    assert out.shape == (1, 3, 3) and out.dtype == np.float32
    cmap = matplotlib.colormaps["viridis"]
    np.testing.assert_allclose(out[0, 0], cmap(0.0)[:3], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], cmap(1.0)[:3], atol=1e-6)
    np.testing.assert_allclose(out[0, 2], out[0, 1])  # clipped


def side_by_side(truth: np.ndarray, pred: np.ndarray, gap: int = 4, error_max: float = 0.25) -> np.ndarray:
    """truth | pred | error, the strip :func:`comparison` shows under its header."""
    return panels_row([truth, pred, error_image(truth, pred, error_max)], gap)


def test_panels_row_and_the_error_image() -> None:
    rng = np.random.default_rng(2)
    truth = rng.random((6, 5, 3)).astype(np.float32)
    pred = truth.copy()
    pred[:, :2] = np.clip(pred[:, :2] + 0.5, 0, 1)
    out = side_by_side(truth, pred, gap=2)
    assert out.shape == (6, 3 * 5 + 2 * 2, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :5], truth)
    np.testing.assert_array_equal(out[:, 5:7], 1.0)
    np.testing.assert_array_equal(out[:, 7:12], pred)
    np.testing.assert_array_equal(out[:, 12:14], 1.0)
    error = out[:, 14:]
    np.testing.assert_allclose(error[:, 2:], colorize(np.zeros((6, 3)), 0, 0.25, "inferno"))
    assert (error[:, :2].sum(-1) > error[:, 2:].sum(-1).max()).all()  # errors are brighter
    # The error is the mean over the channels: 0.24 off in red alone is 0.08.
    red = np.tile(np.float32([0.24, 0.0, 0.0]), (2, 2, 1))
    error = error_image(np.zeros((2, 2, 3), np.float32), red)
    np.testing.assert_allclose(error, colorize(np.full((2, 2), 0.08), 0, 0.25, "inferno"), atol=1e-6)
    with pytest.raises(ValueError, match="two"):
        error_image(truth, pred[:, :4])
    with pytest.raises(ValueError, match="one shape"):
        panels_row([truth, pred[:, :4]])
    np.testing.assert_array_equal(panels_row([truth], gap=3), truth)  # one panel: no gap


def test_enlarge_makes_each_pixel_a_block() -> None:
    image = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    out = enlarge(image, 3)
    assert out.shape == (6, 6, 3)
    for y, x in np.ndindex(6, 6):
        np.testing.assert_array_equal(out[y, x], image[y // 3, x // 3])
    assert enlarge(image, 1) is image
    with pytest.raises(ValueError, match="enlarge factor must be >= 1, got 0"):
        enlarge(image, 0)


def _ink_columns(row: np.ndarray) -> np.ndarray:
    """Columns of a caption row (rows, width, 3) where text is drawn (darker than white)."""
    return np.flatnonzero((row < 0.5).any(axis=(0, 2)))


def test_captions_are_centred_over_their_panels_and_shrink_to_fit() -> None:
    row = caption_row(["a", "a much longer caption"], panel_width=120, gap=10)
    assert row.shape[1] == 250 and row.dtype == np.float32 and row.min() >= 0 and row.max() <= 1
    np.testing.assert_array_equal(row[..., 0], row[..., 2])  # grey on white
    ink = _ink_columns(row)
    first, second = ink[ink < 120], ink[ink >= 130]
    assert len(first) + len(second) == len(ink)  # nothing drawn in the gap
    assert abs((first.min() + first.max()) / 2 - 60) <= 2  # centred over its panel
    assert abs((second.min() + second.max()) / 2 - 190) <= 2
    assert second.min() >= 130 and second.max() < 250  # shrunk to fit its panel (size 10 overflows)
    wide = caption_row(["a", "a much longer caption"], panel_width=400, gap=10)
    assert wide.shape[0] > row.shape[0]  # a larger font for larger panels
    with pytest.raises(ValueError):
        caption_row([], panel_width=10, gap=0)


def test_comparison_is_the_enlarged_strip_under_captions() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random((50, 40, 3)).astype(np.float32)
    pred = np.clip(truth + 0.1, 0, 1)
    out = comparison(truth, pred, 23.456)
    # 256 // 50: each pixel a 5x5 block, the panels 200 wide, the gaps 20.
    strip = enlarge(side_by_side(truth, pred), 5)
    assert out.shape[1:] == (3 * 200 + 2 * 20, 3)
    np.testing.assert_array_equal(out[-250:], strip)
    header = out[:-250]
    assert 10 <= header.shape[0] <= 40
    ink = _ink_columns(header)
    for panel in range(3):  # a caption over each panel, none over a gap
        left = panel * 220
        assert ((ink >= left) & (ink < left + 200)).any()
    assert all(any(p * 220 <= c < p * 220 + 200 for p in range(3)) for c in ink)
    # The render's caption carries its PSNR: only the middle one changes with it.
    other = comparison(truth, pred, 31.0)
    np.testing.assert_array_equal(other[:, :200], out[:, :200])
    np.testing.assert_array_equal(other[:, 440:], out[:, 440:])
    assert not np.array_equal(other[:, 220:420], out[:, 220:420])
    perfect = comparison(truth, truth, float("inf"))
    assert len(_ink_columns(perfect[:-250, 220:420])) > len(_ink_columns(header[:, 220:420]))
    # A view larger than ``fit`` is not enlarged; nor is it shrunk.
    big = comparison(np.zeros((300, 280, 3), np.float32), np.zeros((300, 280, 3), np.float32), 30.0)
    assert big.shape[1] == 3 * 280 + 2 * 4 and big.shape[0] > 300


def test_downscale_averages_whole_blocks_and_drops_the_remainder() -> None:
    image = np.arange(5 * 7, dtype=np.float32).reshape(5, 7, 1)  # value = 7 * row + column
    out = downscale(image, 2)
    assert out.shape == (2, 3, 1) and out.dtype == np.float32
    # Block (0, 0) holds 0, 1, 7, 8; row 4 and column 6 are dropped.
    np.testing.assert_array_equal(out[..., 0], [[4.0, 6.0, 8.0], [18.0, 20.0, 22.0]])
    assert downscale(image, 1) is image
    with pytest.raises(ValueError, match="factor"):
        downscale(image, 0)


def test_a_16_bit_grey_png_reads_to_its_fraction_of_full_scale(tmp_path: Path) -> None:
    values = np.array([[0, 16384, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")  # mode I;16
    image = read_png(tmp_path / "grey16.png")
    assert image.shape == (1, 3, 3)
    np.testing.assert_allclose(image[0, :, 0], values[0] / 65535, atol=1e-6)


def test_colorize_nan_and_degenerate_ranges() -> None:
    import matplotlib

    out = colorize(np.array([[np.nan, 6.0]]), 2.0, 6.0, "viridis")
    np.testing.assert_allclose(out[0, 0], matplotlib.colormaps["viridis"](0.0)[:3], atol=1e-6)  # NaN: lo
    with pytest.raises(ValueError):
        colorize(np.zeros((1, 1)), 2.0, 2.0)


def test_depth_image_shows_empty_pixels_as_far() -> None:
    depth, opacity = np.array([[0.0, 3.0]]), np.array([[0.0, 1.0]])  # nothing hit | a surface at 3
    out = depth_image(depth, opacity, 2.0, 6.0)
    np.testing.assert_allclose(out[0, 0], colorize(np.array([[6.0]]), 2.0, 6.0)[0, 0])
    np.testing.assert_allclose(out[0, 1], colorize(np.array([[3.0]]), 2.0, 6.0)[0, 0])


def test_opacity_images_run_from_viridis_purple_at_0_to_its_yellow_at_1() -> None:
    import matplotlib

    out = opacity_image(np.array([[0.0, 0.5, 1.0]]))
    np.testing.assert_allclose(out[0], matplotlib.colormaps["viridis"]([0.0, 0.5, 1.0])[:, :3], atol=1e-6)
    purple, yellow = out[0, 0], out[0, 2]
    assert purple[2] > purple[1] and yellow[0] > yellow[2] and yellow[1] > yellow[2]  # as the README says


def test_caption_fonts_stay_within_their_sizes_and_the_text_is_centred_in_its_row() -> None:
    smallest, largest = CAPTION_SIZES
    # A narrow panel (40 // 12 = 3) still gets the smallest font; a caption too long even at
    # that size keeps it (and overflows) rather than shrinking further.
    assert caption_row(["a"], panel_width=40, gap=0).shape[0] == math.ceil(1.6 * smallest)
    assert caption_row(["a caption far too long for its panel"], panel_width=40, gap=0).shape[0] == (
        math.ceil(1.6 * smallest))
    assert caption_row(["a"], panel_width=600, gap=0).shape[0] == math.ceil(1.6 * largest)
    for width in (120, 240, 600):
        row = caption_row(["Hg"], panel_width=width, gap=0)
        ink = np.flatnonzero((row < 0.5).any(axis=(1, 2)))
        assert ink.min() > 0 and ink.max() < row.shape[0] - 1  # not cut off at either edge
        assert abs((ink.min() + ink.max()) / 2 - (row.shape[0] - 1) / 2) <= 1.5  # centred


def test_comparison_captions_give_the_psnr_to_two_decimals_and_the_error_scale() -> None:
    rng = np.random.default_rng(4)
    truth = rng.random((64, 64, 3)).astype(np.float32)
    pred = np.clip(truth + 0.3, 0, 1)
    out = comparison(truth, pred, 23.456, error_max=0.5)
    # 256 // 64 = 4: panels 256 wide, gaps 16; the error panel over [0, error_max].
    np.testing.assert_array_equal(out[-256:], enlarge(side_by_side(truth, pred, 4, 0.5), 4))
    captions = ["truth", "render, 23.46 dB", "|error|, 0 to 0.5"]
    row = caption_row(captions, 256, 16)
    np.testing.assert_array_equal(out[: len(row)], row)
    # Between the captions and the panels, the error colours' scale over the error panel
    # alone, a third of the captions' height, a white line under it.
    bar = out[len(row):-256]
    drawn = np.flatnonzero((bar != 1).any(axis=(1, 2)))
    np.testing.assert_array_equal(drawn, np.arange(math.ceil(len(row) / 3)))
    assert len(bar) > len(drawn) and (bar[:, : 2 * (256 + 16)] == 1).all()
    np.testing.assert_array_equal(bar[drawn, 2 * (256 + 16):], scale_bar(256, len(drawn), "inferno"))
    perfect = comparison(truth, truth, math.inf)
    captions = ["truth", "render, identical to the truth", "|error|, 0 to 0.25"]
    row = caption_row(captions, 256, 16)  # a smaller font, for the longer caption to fit
    np.testing.assert_array_equal(perfect[: len(row)], row)
    bar = perfect[len(row):-256]
    assert (bar != 1).any(axis=(1, 2)).sum() == math.ceil(len(row) / 3)  # the bar follows the font


def test_a_scale_bar_runs_from_the_colormaps_start_to_its_end() -> None:
    bar = scale_bar(10, 3, "turbo")
    assert bar.shape == (3, 10, 3) and bar.dtype == np.float32
    np.testing.assert_array_equal(bar[0], bar[2])
    np.testing.assert_allclose(bar[0], colorize(np.array([np.arange(10) + 0.5]), 0, 10, "turbo")[0])
    # Its left end is the colour of a low value, its right end of a high one.
    low, high = colorize(np.array([[0.0, 1.0]]), 0, 1, "turbo")[0]
    assert np.abs(bar[0, 0] - low).sum() < np.abs(bar[0, 0] - high).sum()
    assert np.abs(bar[0, -1] - high).sum() < np.abs(bar[0, -1] - low).sum()


def test_captioned_panels_without_scales_have_no_bar_row_and_need_one_caption_each() -> None:
    panels = [np.zeros((20, 10, 3), np.float32), np.full((20, 10, 3), 0.5, np.float32)]
    out = captioned(panels, ["a", "b"], (None, None), fit=40, gap=2)  # 40 // 20: 2x2 blocks
    row = caption_row(["a", "b"], 20, 4)
    np.testing.assert_array_equal(out, np.concatenate([row, enlarge(panels_row(panels, 2), 2)]))
    with_bar = captioned(panels, ["a", "b"], ("viridis", None), fit=40, gap=2)
    assert with_bar.shape[0] > out.shape[0] and with_bar.shape[1] == out.shape[1]
    with pytest.raises(ValueError, match="a caption and a scale"):
        captioned(panels, ["a"], (None, None))
    with pytest.raises(ValueError, match="a caption and a scale"):
        captioned(panels, ["a", "b"], (None,))
