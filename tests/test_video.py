"""Video frames and files: MP4 and GIF written and read back."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import file_size_limit

from nerf.errors import DataError
from nerf.images import DEPTH_CMAP, caption_row, captioned, scale_bar, to_uint8
from nerf.video import video_frame, write_gif, write_mp4


def _frames(n: int = 6, h: int = 24, w: int = 20) -> list[np.ndarray]:
    """A bright square moving across a dark image, colour | depth."""
    frames = []
    for i in range(n):
        rgb = np.full((h, w, 3), 0.1, np.float32)
        rgb[8:16, 2 + 2 * i : 8 + 2 * i] = [0.9, 0.6, 0.2]
        depth = np.full((h, w, 3), 0.5, np.float32)
        frames.append(video_frame(rgb, depth, 2.0, 6.0, fit=w))
    return frames


def test_video_frame_is_colour_gap_depth_under_captions_padded_to_even_size() -> None:
    rgb = np.zeros((5, 7, 3), np.float32)
    depth = np.ones((5, 7, 3), np.float32) * 0.5
    frame = video_frame(rgb, depth, 2.0, 6.0, fit=7, gap=3)  # 7 // 7: not enlarged
    header = captioned([rgb, depth], ["colour", "depth, 2 to 6"], (None, DEPTH_CMAP), fit=7, gap=3)
    top = len(header) - 5  # the captions and the depth colours' scale bar
    assert frame.dtype == np.uint8 and frame.shape == (len(header) + len(header) % 2, 18, 3)  # 17 -> 18
    np.testing.assert_array_equal(frame[: len(header), :17], to_uint8(header))
    assert (frame[top:top + 5, :7] == 0).all() and (frame[top:top + 5, 7:10] == 255).all()
    assert (frame[top:top + 5, 10:17] == 128).all() and (frame[:, 17] == 255).all()
    bar = frame[:top, 10:17]
    assert (bar == to_uint8(scale_bar(7, 1, DEPTH_CMAP))).all(axis=(1, 2)).any()  # over the depth
    over_colour = frame[:top, :7].astype(int)
    assert (over_colour == over_colour[..., :1]).all()  # grey text, no scale over the colour panel
    with pytest.raises(ValueError, match="one shape"):
        video_frame(rgb, depth[:4], 2.0, 6.0)
    # The caption gives the depth range (the frame's: shifted for a farther camera).
    wide = np.zeros((64, 64, 3), np.float32)
    for near, far, caption in ((2.0, 6.0, "depth, 2 to 6"), (2.5, 6.125, "depth, 2.5 to 6.12")):
        row = to_uint8(caption_row(["colour", caption], 64, 4))
        np.testing.assert_array_equal(video_frame(wide, wide, near, far, fit=64)[: len(row)], row)
    # A small view is enlarged by whole pixels up to fit.
    big = video_frame(rgb[:, :6], depth[:, :6], 2.0, 6.0, fit=24, gap=4)  # 24 // 6: 4x4 blocks
    enlarged = captioned([rgb[:, :6], depth[:, :6]], ["colour", "depth, 2 to 6"], (None, DEPTH_CMAP),
                         fit=24, gap=4)
    assert big.shape[1] == 4 * (6 + 4 + 6) and big.shape[0] % 2 == 0
    np.testing.assert_array_equal(big[: len(enlarged)], to_uint8(enlarged))
    assert (big[len(enlarged) - 20 : len(enlarged), :24] == 0).all()  # the 5x6 colour panel, 4x


def test_mp4_and_gif_hold_every_frame(tmp_path) -> None:
    frames = _frames()
    write_mp4(tmp_path / "v.mp4", frames, fps=12)
    write_gif(tmp_path / "v.gif", frames, fps=12)
    meta = iio.immeta(tmp_path / "v.mp4")
    height = frames[0].shape[0]  # 24 under the header
    assert frames[0].shape == (height, 44, 3) and height > 24
    assert meta["codec"] == "h264" and meta["fps"] == 12.0 and meta["size"] == (44, height)
    video = iio.imread(tmp_path / "v.mp4")
    assert video.shape == (6, height, 44, 3)
    # Lossy, but each decoded frame is nearest to its own source frame.
    for i, decoded in enumerate(video):
        errors = [np.abs(decoded.astype(float) - f).mean() for f in frames]
        assert int(np.argmin(errors)) == i and errors[i] < 8
    gif = iio.imread(tmp_path / "v.gif")
    assert gif.shape[:3] == (6, height, 44)
    assert np.abs(gif[..., :3].astype(float) - np.stack(frames)).max() <= 8  # palette rounding
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif", "v.mp4"]  # no temporaries left
    # The GIF plays at the requested rate (its frame delay in ms) and loops forever.
    meta = iio.immeta(tmp_path / "v.gif")
    assert meta["duration"] == pytest.approx(1000 / 12, abs=10) and meta["loop"] == 0


def test_an_mp4_keeps_a_fractional_frame_rate(tmp_path) -> None:
    write_mp4(tmp_path / "v.mp4", _frames(), fps=12.5)
    assert iio.immeta(tmp_path / "v.mp4")["fps"] == 12.5


def _gif_delays(path) -> list[int]:
    from PIL import Image

    with Image.open(path) as gif:
        delays = []
        for i in range(gif.n_frames):
            gif.seek(i)
            delays.append(gif.info["duration"])
    return delays


@pytest.mark.parametrize(("n", "fps", "shown", "delays"), [
    # 24 fps: frames start at their own times rounded to 10 ms, 40 or 50 ms apart (always 40
    # would play at 25 fps).
    (6, 24, [0, 1, 2, 3, 4, 5], [40, 40, 40, 50, 40, 40]),
    (6, 12, [0, 1, 2, 3, 4, 5], [80, 90, 80, 80, 90, 80]),
    # Above 50 fps, frames within 20 ms of the last one shown are left out (browsers play
    # shorter delays as 100 ms).
    (6, 60, [0, 1, 3, 4], [20, 30, 20, 30]),
    (6, 100, [0, 2, 4], [20, 20, 20]),
])
def test_a_gif_plays_in_real_time(tmp_path, n, fps, shown, delays) -> None:
    frames = _frames(n)
    write_gif(tmp_path / "v.gif", frames, fps)
    assert _gif_delays(tmp_path / "v.gif") == delays
    assert sum(delays) == round(1000 * n / fps)
    gif = iio.imread(tmp_path / "v.gif")
    assert np.abs(gif[..., :3].astype(float) - np.stack(frames)[shown]).max() <= 8


def test_an_mp4_cut_short_is_an_error_and_keeps_the_old_video(tmp_path) -> None:
    """ffmpeg exits as if it had succeeded when a write fails (here: past the file size limit,
    as on a full disk); the video is read back before it replaces the old one."""
    write_mp4(tmp_path / "v.mp4", _frames(), fps=12)
    old = (tmp_path / "v.mp4").read_bytes()
    noise = [np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8) for i in range(24)]
    with (file_size_limit(1 << 14),
          pytest.raises(DataError, match=r"v\.mp4: cannot write it \(ffmpeg's file holds \d+ of 24 frames")):
        write_mp4(tmp_path / "v.mp4", noise, fps=12)
    assert (tmp_path / "v.mp4").read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    write_mp4(tmp_path / "v.mp4", noise, fps=12)  # without the limit, the same frames write
    assert iio.imread(tmp_path / "v.mp4").shape == (24, 96, 128, 3)
