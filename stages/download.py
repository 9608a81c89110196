"""DVC stage: fetch ``data.source`` into a validated, normalised ``data/raw``."""

import argparse
from pathlib import Path

from nerf.config import load_params
from nerf.download import download
from nerf.errors import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.download", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (data/raw)")
    args = parser.parse_args()
    info = download(load_params("params.yaml").data, args.out)
    print(f"download: {info['source']} -> {args.out}: {info['format']}, {info['views']} views "
          f"of {info['width']}x{info['height']}")


if __name__ == "__main__":
    run_stage(main)
