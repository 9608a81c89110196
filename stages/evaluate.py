"""Evaluate stage: PSNR and SSIM of the rendered test views against the held-out truth.

python stages/evaluate.py --test data/split/test.npz --renders renders \
    --metrics metrics/eval.json --per-view metrics/per_view.csv --plot metrics/per_view_psnr.png

Reads ``params.yaml`` (``eval``) from the working folder and ``<renders>/rgb/<view_filename>``
per test view. Everything is computed before anything is written; each output is atomic.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import numpy as np
import torch

from nerf.config import load_params
from nerf.errors import DataError, run_stage
from nerf.images import read_png, view_filename
from nerf.io import atomic_file, write_json
from nerf.metrics import psnr, ssim
from nerf.views import load_views


def _json_float(value: float, digits: int) -> float | str:
    """Rounded float; +inf (a perfect render) becomes the string "inf" so the JSON stays valid."""
    return round(value, digits) if math.isfinite(value) else str(value)


def _plot_png(psnrs: np.ndarray, mean_psnr: float, mean_ssim: float) -> bytes:
    """Bar chart of per-view PSNR (n,) with the mean as a dashed line, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    finite = np.where(np.isfinite(psnrs), psnrs, np.nan)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(psnrs) + 2), 3.2), dpi=100)
    ax.bar(np.arange(len(psnrs)), finite, color="tab:blue")
    ax.axhline(mean_psnr, color="tab:red", linestyle="--", label=f"mean {mean_psnr:.2f} dB")
    ax.set(xlabel="test view", ylabel="PSNR (dB)",
           title=f"mean PSNR {mean_psnr:.2f} dB, mean SSIM {mean_ssim:.4f}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, required=True, help="test views .npz")
    parser.add_argument("--renders", type=Path, required=True, help="render stage output folder")
    parser.add_argument("--metrics", type=Path, required=True, help="summary JSON to write")
    parser.add_argument("--per-view", type=Path, required=True, help="per-view CSV to write")
    parser.add_argument("--plot", type=Path, required=True, help="per-view PSNR PNG to write")
    args = parser.parse_args()

    cfg = load_params("params.yaml").eval
    views = load_views(args.test)
    if views.n_views == 0:
        raise DataError(f"{args.test}: no test views to evaluate")
    if min(views.height, views.width) <= cfg.ssim_kernel // 2:
        raise DataError(
            f"{args.test}: {views.height}x{views.width} images are too small for a "
            f"{cfg.ssim_kernel}-pixel SSIM window"
        )

    renders = []
    for i, name in enumerate(views.names):
        path = args.renders / "rgb" / view_filename(i, name)
        if not path.is_file():
            raise DataError(f"{path}: render of test view {i} ({name}) not found; "
                            "run the render stage first (dvc repro render)")
        image = read_png(path)
        if image.shape != views.images[i].shape:
            raise DataError(f"{path}: render is {image.shape[1]}x{image.shape[0]} pixels, the test "
                            f"view {name} is {views.width}x{views.height}")
        renders.append(image)
    pred = torch.from_numpy(np.stack(renders))
    truth = torch.from_numpy(views.images)
    psnrs = psnr(pred, truth).numpy()
    ssims = ssim(pred, truth, cfg.ssim_kernel, cfg.ssim_sigma).numpy()
    mean_psnr, mean_ssim = float(psnrs.mean()), float(ssims.mean())

    summary = {
        "psnr": _json_float(mean_psnr, 4),
        "ssim": _json_float(mean_ssim, 5),
        "psnr_min": _json_float(float(psnrs.min()), 4),
        "psnr_max": _json_float(float(psnrs.max()), 4),
        "n_views": views.n_views,
    }
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["view", "name", "psnr", "ssim"])
    for i, name in enumerate(views.names):
        writer.writerow([i, name, _json_float(float(psnrs[i]), 4), _json_float(float(ssims[i]), 5)])
    plot = _plot_png(psnrs, mean_psnr, mean_ssim)

    write_json(args.metrics, summary)
    with atomic_file(args.per_view) as tmp:
        tmp.write_text(table.getvalue())
    with atomic_file(args.plot) as tmp:
        tmp.write_bytes(plot)
    print(f"evaluated {views.n_views} test views: PSNR {mean_psnr:.2f} dB "
          f"(min {psnrs.min():.2f}, max {psnrs.max():.2f}), SSIM {mean_ssim:.4f}")


if __name__ == "__main__":
    run_stage(main)
