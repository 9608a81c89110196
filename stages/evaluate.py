"""Evaluate stage: PSNR and SSIM of the rendered test views against the held-out truth.

python -m stages.evaluate --test data/split/test.npz --renders renders \
    --metrics metrics/eval.json --per-view metrics/per_view.csv --plot metrics/per_view_psnr.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nerf.config import load_params
from nerf.errors import run_stage
from nerf.evaluation import evaluate, read_renders, write_evaluation
from nerf.views import load_views


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, required=True, help="test views .npz")
    parser.add_argument("--renders", type=Path, required=True, help="render stage output folder")
    parser.add_argument("--metrics", type=Path, required=True, help="summary JSON to write")
    parser.add_argument("--per-view", type=Path, required=True, help="per-view CSV to write")
    parser.add_argument("--plot", type=Path, required=True, help="per-view PSNR PNG to write")
    args = parser.parse_args()

    config = load_params("params.yaml").eval
    views = load_views(args.test)
    result = evaluate(read_renders(args.renders, views), views, config)
    write_evaluation(result, args.metrics, args.per_view, args.plot)
    print(f"evaluate: {views.n_views} test views: PSNR {result.psnr.mean():.2f} dB "
          f"(min {result.psnr.min():.2f}, max {result.psnr.max():.2f}), SSIM {result.ssim.mean():.4f}")


if __name__ == "__main__":
    run_stage(main)
