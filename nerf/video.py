"""Videos of rendered camera paths: colour and depth side by side, captioned, as MP4 (H.264, through
imageio's ffmpeg plugin) and as a looping GIF (Pillow)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np

from nerf.errors import DataError
from nerf.images import DEPTH_CMAP, captioned, to_uint8
from nerf.io import atomic_file


def video_frame(rgb: np.ndarray, depth: np.ndarray, near: float, far: float, fit: int = 256,
                gap: int = 4) -> np.ndarray:
    """``rgb | depth`` (two (h, w, 3) floats in [0, 1], the depth colorized over [near, far],
    :func:`nerf.images.depth_image`) under the captions "colour" and "depth, 2 to 6" and the
    depth colours' scale bar (:func:`nerf.images.captioned`: a small view enlarged by whole
    pixels up to ``fit``), as one uint8 frame padded with white to even width and height
    (H.264 with 4:2:0 chroma needs both)."""
    captions = ["colour", f"depth, {near:.3g} to {far:.3g}"]
    frame = captioned([rgb, depth], captions, (None, DEPTH_CMAP), fit, gap)
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    return to_uint8(np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=1.0))


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> None:
    """(h, w, 3) uint8 frames (even h and w) -> H.264 MP4, atomically.

    ffmpeg only logs a failed write (a full disk) and exits as if it had succeeded, so the
    file is read back (its frames counted, ~0.1 s for the default video) before it replaces
    ``path``: a video cut short is an error, not an output."""
    with atomic_file(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".mp4", fps=fps, codec="libx264", quality=8,
                    macro_block_size=2)
        try:
            written = imageio_ffmpeg.count_frames_and_secs(str(tmp))[0]
        except RuntimeError:  # ffmpeg cannot read the file at all
            written = 0
        if written != len(frames):
            free = shutil.disk_usage(tmp.parent).free
            raise DataError(f"{path}: cannot write it (ffmpeg's file holds {written} of {len(frames)} "
                            f"frames; {free:,} bytes free on its file system)")


def gif_timing(n_frames: int, fps: float) -> tuple[list[int], list[int]]:
    """Which of ``n_frames`` frames at ``fps`` a GIF shows, and for how many milliseconds
    each, so that it plays in real time.

    A GIF delay is a whole number of hundredths of a second, and browsers play delays under
    2 as 10: each frame starts at its own time rounded to a hundredth (so 24 fps alternates
    4 and 5, not 4 throughout: 25 fps), and above 50 fps frames that would start within 2
    hundredths of the last one shown are left out. The delays add up to the video's length.
    """
    starts = [round(100 * i / fps) for i in range(n_frames)]
    shown = [0]
    for i in range(1, n_frames):
        if starts[i] - starts[shown[-1]] >= 2:
            shown.append(i)
    ends = [starts[i] for i in shown[1:]] + [max(round(100 * n_frames / fps), starts[shown[-1]] + 2)]
    return shown, [10 * (end - starts[i]) for i, end in zip(shown, ends)]


def write_gif(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> None:
    """(h, w, 3) uint8 frames -> a GIF that loops forever at ``fps`` (:func:`gif_timing`),
    atomically."""
    shown, durations = gif_timing(len(frames), fps)
    with atomic_file(path) as tmp:
        iio.imwrite(tmp, np.stack([frames[i] for i in shown]), extension=".gif", duration=durations,
                    loop=0)
