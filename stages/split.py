"""DVC stage: split ``data/raw`` into train, validation and test views in ``data/split``."""

import argparse
from pathlib import Path

from nerf.config import load_params
from nerf.errors import run_stage
from nerf.split import PARTS, split


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.split", description=__doc__)
    parser.add_argument("--raw", type=Path, required=True, help="download stage's folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (data/split)")
    args = parser.parse_args()
    params = load_params("params.yaml")
    m = split(args.raw, args.out, params.split, min_side=params.eval.min_image_side)
    size, counts = m["image_size"], " / ".join(f"{m[part]['count']} {part}" for part in PARTS)
    print(f"split: {m['strategy']}, {counts} views of {size['width']}x{size['height']} on {m['background']} "
          f"-> {args.out}")


if __name__ == "__main__":
    run_stage(main)
