"""Video stage: an orbit (or spiral) of the trained scene, colour and depth side by side.

python -m stages.video --model models/model.pt --test data/split/test.npz --out videos
python -m stages.video --model models/model.pt --test data/split/test.npz --poses path.json --out my_video

Writes ``<out>/video.mp4`` and ``<out>/video.gif`` (the folder appears only when both are
done). The path is ``params.yaml``'s ``video`` section, around the point the test cameras
look at; ``--poses`` follows the poses of a JSON file (Blender ``transform_matrix``
convention) instead. A camera farther from the scene than the test cameras (a larger
``video.radius``) samples the trained depth range (``data.near`` to ``data.far``) shifted
as much farther.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from nerf.camera_path import depth_shifts, read_poses, video_path
from nerf.config import load_params
from nerf.errors import run_stage
from nerf.images import depth_image
from nerf.io import atomic_dir
from nerf.models import render_image
from nerf.rays import scaled_camera
from nerf.training import deterministic, load_checkpoint, pick_device
from nerf.video import video_frame, write_gif, write_mp4
from nerf.views import load_views


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.video", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint (models/model.pt)")
    parser.add_argument("--test", type=Path, required=True,
                        help="test views: their camera and where they look")
    parser.add_argument("--poses", type=Path, help="JSON file of camera poses to follow instead of the orbit")
    parser.add_argument("--out", type=Path, required=True, help="video folder to write")
    args = parser.parse_args()

    params = load_params("params.yaml")
    config = params.video
    device = pick_device(params.train.device)
    model, _ = load_checkpoint(args.model, device)
    model.eval()
    views = load_views(args.test)
    height, width, focal = scaled_camera(views.height, views.width, views.focal, config.width or views.width)
    if args.poses is None:
        poses = video_path(config.path, config.frames, config.radius, config.elevation, config.amplitude,
                           config.turns, views.poses, (model.near + model.far) / 2)
    else:
        requested = read_poses(args.poses)
        poses = requested.poses
        focal = requested.focal(width, focal)
    # A camera farther out than the test cameras (video.radius) samples a depth range as far
    # beyond the trained [near, far]: the scene, not the empty space in front of it.
    shifts = depth_shifts(poses, views.poses, model.near, model.far)

    frames = []
    with atomic_dir(args.out, holds=("video.mp4", "video.gif")) as out, deterministic(device):
        with tqdm(range(len(poses)), desc="video", unit="frame", dynamic_ncols=True) as bar:
            for i in bar:
                shift = float(shifts[i])
                result = render_image(model, torch.from_numpy(poses[i]).to(device), height, width, focal,
                                      params.render.chunk, shift)
                near, far = model.near + shift, model.far + shift
                depth = depth_image(result.depth.cpu().numpy(), result.opacity.cpu().numpy(), near, far)
                frames.append(video_frame(result.rgb.clamp(0, 1).cpu().numpy(), depth, near, far))
        write_mp4(out / "video.mp4", frames, config.fps)
        write_gif(out / "video.gif", frames, config.fps)
    print(f"video: {len(frames)} frame{'s' * (len(frames) != 1)} of {width}x{height} (colour | depth) "
          f"at {config.fps:g} fps -> {args.out}/video.mp4, video.gif")


if __name__ == "__main__":
    run_stage(main)
