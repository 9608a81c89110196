"""Render stage: every test view as PNG, with side-by-side, depth and opacity images.

python stages/render.py --model models/model.pt --test data/split/test.npz --out renders

Writes ``<out>/{rgb,compare,depth,opacity}/<view_filename>``; the folder appears only when
every view is done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from nerf.config import load_params
from nerf.errors import run_stage
from nerf.images import colorize, side_by_side, view_filename, write_png
from nerf.io import atomic_dir
from nerf.models import render_image
from nerf.training import deterministic, load_checkpoint, pick_device
from nerf.views import load_views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint (models/model.pt)")
    parser.add_argument("--test", type=Path, required=True, help="test views (data/split/test.npz)")
    parser.add_argument("--out", type=Path, required=True, help="renders folder to write")
    args = parser.parse_args()

    params = load_params("params.yaml")
    device = pick_device(params.train.device)
    model, _ = load_checkpoint(args.model, device)
    model.eval()
    views = load_views(args.test)
    with atomic_dir(args.out) as out, deterministic(device):
        for i in tqdm(range(views.n_views), desc="render", unit="view", dynamic_ncols=True):
            pose = torch.from_numpy(views.poses[i]).to(device)
            result = render_image(model, pose, views.height, views.width, views.focal, params.render.chunk)
            rgb = result.rgb.clamp(0, 1).cpu().numpy()
            name = view_filename(i, views.names[i])
            write_png(out / "rgb" / name, rgb)
            write_png(out / "compare" / name, side_by_side(views.images[i], rgb))
            # Where the ray sees through to the background, show the far plane.
            depth = (result.depth + (1 - result.opacity) * model.far).cpu().numpy()
            write_png(out / "depth" / name, colorize(depth, model.near, model.far))
            write_png(out / "opacity" / name, colorize(result.opacity.cpu().numpy(), 0.0, 1.0, "viridis"))
    print(f"render: {views.n_views} views of {views.width}x{views.height} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
