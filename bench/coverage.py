"""Random against fixed training backgrounds on an RGBA source: held-out PSNR and coverage.

python -m bench.coverage --set data.source=../shared/data/nerf_synthetic/lego split.strategy=every_nth \
    split.image_size=200 split.background=white [--kind fast] [--steps 1000] [--device cpu]

Trains the kind twice from the same seed, ``train.random_background`` true and false, and
renders the held-out views once each: mean PSNR, mean |rendered opacity - alpha| (how well
the geometry matches the views' coverage) and the mean opacity where alpha < 0.01 (density
in empty space). Writes bench/results/coverage.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from bench.common import (
    DEVICES,
    KINDS,
    REPO,
    add_params_arguments,
    count,
    devices,
    load_split,
    make_model,
    params_with,
    write_csv,
)
from nerf.errors import ConfigError, run_stage
from nerf.metrics import psnr
from nerf.models import render_image
from nerf.training import machine, train


def measure(kind: str, device: torch.device, steps: int | None, params_path: Path, overrides: list[str],
            random_background: bool) -> dict:
    overrides = [*overrides, f"train.random_background={str(random_background).lower()}"]
    params = params_with(params_path, kind, overrides)
    train_views, test_views = load_split(params.data.source, params.split)
    if test_views.alpha is None:
        raise ConfigError(f"data.source {params.data.source} has no alpha: bench.coverage needs an RGBA "
                          "source (a Blender folder)")
    model = make_model(params.model, params, train_views, device, params.train.seed)
    config = dataclasses.replace(params.train, steps=steps or params.train.steps, val_every=10**9,
                                 checkpoint_every=0)
    summary = train(model, train_views, None, config, device, progress=False)
    model.eval()
    scores, errors, empty = [], [], []
    with torch.no_grad():
        for pose, image, alpha in zip(test_views.poses, test_views.images, test_views.alpha, strict=True):
            out = render_image(model, torch.from_numpy(pose).to(device), test_views.height, test_views.width,
                               test_views.focal, params.render.chunk)
            opacity, alpha = out.opacity.reshape(-1).cpu(), torch.from_numpy(alpha).reshape(-1)
            scores.append(float(psnr(out.rgb.clamp(0, 1).cpu(), torch.from_numpy(image))))
            errors.append(float((opacity - alpha).abs().mean()))
            empty.append(float(opacity[alpha < 0.01].mean()))
    mean = lambda values: sum(values) / len(values)
    return {"kind": kind, "device": machine(device), "image": f"{test_views.width}x{test_views.height}",
            "random_background": random_background, "steps": summary.steps,
            "seconds": round(summary.seconds, 1),
            "psnr": round(mean(scores), 3), "opacity_error": round(mean(errors), 5),
            "empty_opacity": round(mean(empty), 5), "overrides": " ".join(overrides)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.coverage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="fast", choices=KINDS)
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--steps", type=count(1), default=None, help="schedule length (default: train.steps)")
    add_params_arguments(parser)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "coverage.csv")
    args = parser.parse_args()
    (device,) = devices([args.device])
    rows = []
    for random_background in (True, False):
        rows.append(measure(args.kind, device, args.steps, args.params, args.overrides, random_background))
        print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    write_csv(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
