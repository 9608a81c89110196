"""Render stage: every test view as PNG, with side-by-side, depth and opacity images.

python -m stages.render --model models/model.pt --test data/split/test.npz --out renders \
    --metrics metrics/render.json
python -m stages.render --model models/model.pt --test data/split/test.npz --poses cameras.json --out novel

Writes ``<out>/{rgb,compare,depth,opacity}/<view_filename>``; the folder appears only when
every view is done. ``--metrics`` writes how long a view took to render, the median over the
views (``render.seconds_per_view``: the model's passes and the copy to the CPU, not the PNGs),
for ``dvc exp show`` to compare ``render.chunk`` or kinds by. With ``--poses`` (a JSON file
of camera poses in the Blender ``transform_matrix`` convention) it renders those poses
instead, with the test views' camera (or the file's ``camera_angle_x``), and writes rgb,
depth and opacity; a pose farther from the scene than the test cameras samples the trained
depth range (``data.near`` to ``data.far``) shifted as much farther.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nerf.camera_path import depth_shifts, read_poses
from nerf.config import load_params
from nerf.errors import run_stage
from nerf.images import comparison, depth_image, opacity_image, to_uint8, view_filename, write_png
from nerf.io import atomic_dir, write_json
from nerf.metrics import psnr
from nerf.models import render_image
from nerf.training import deterministic, load_checkpoint, pick_device
from nerf.views import load_views

RENDERS = ("rgb", "compare", "depth", "opacity")  # what --out holds: a folder of PNGs each


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.render", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint (models/model.pt)")
    parser.add_argument("--test", type=Path, required=True, help="test views (data/split/test.npz)")
    parser.add_argument("--poses", type=Path,
                        help="JSON file of camera poses to render instead of the test views")
    parser.add_argument("--out", type=Path, required=True, help="renders folder to write")
    parser.add_argument("--metrics", type=Path, help="JSON file of render seconds per view to write")
    args = parser.parse_args()

    params = load_params("params.yaml")
    device = pick_device(params.train.device)
    model, _ = load_checkpoint(args.model, device)
    model.eval()
    views = load_views(args.test)
    height, width, focal = views.height, views.width, views.focal
    if args.poses is None:
        poses, names, truths = views.poses, views.names, list(views.images)
        shifts = np.zeros(len(poses))  # the trained depth range, as training validated with
    else:
        requested = read_poses(args.poses)
        poses, names, truths = requested.poses, requested.names, [None] * len(requested.poses)
        focal = requested.focal(width, focal)
        # A camera farther from the scene than the test cameras samples as much farther.
        shifts = depth_shifts(poses, views.poses, model.near, model.far)
    with (atomic_dir(args.out, holds=RENDERS) as out, deterministic(device),
          tqdm(range(len(poses)), desc="render", unit="view", dynamic_ncols=True) as bar):
        seconds = []
        for i in bar:
            start = time.perf_counter()
            pose = torch.from_numpy(np.ascontiguousarray(poses[i])).to(device)
            shift = float(shifts[i])
            result = render_image(model, pose, height, width, focal, params.render.chunk, shift)
            rgb = to_uint8(result.rgb.clamp(0, 1).cpu().numpy())  # as the PNG holds it
            opacity = result.opacity.cpu().numpy()
            depth = result.depth.cpu().numpy()  # on the CPU: the device's work is done
            seconds.append(time.perf_counter() - start)
            name = view_filename(i, names[i])
            write_png(out / "rgb" / name, rgb)
            if truths[i] is not None:
                shown = rgb.astype(np.float32) / np.float32(255)  # as evaluate reads it back
                score = float(psnr(torch.from_numpy(shown), torch.from_numpy(truths[i])))
                write_png(out / "compare" / name, comparison(truths[i], shown, score))
            near, far = model.near + shift, model.far + shift
            write_png(out / "depth" / name, depth_image(depth, opacity, near, far))
            write_png(out / "opacity" / name, opacity_image(opacity))
        # A median: the first view's warm-up (a GPU's kernels compiling) does not sway it.
        median = round(statistics.median(seconds), 5) if seconds else None
        if args.metrics is not None:
            write_json(args.metrics, {"render": {"seconds_per_view": median}})
    timing = "" if median is None else f", {median:.3f} s a view (median)"
    print(f"render: {len(poses)} view{'s' * (len(poses) != 1)} of {width}x{height}{timing} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
