"""Evaluation: the rendered test views against the truth, per view and on average."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from nerf.config import EvalConfig
from nerf.errors import DataError
from nerf.images import read_png, view_filename
from nerf.io import atomic_file, json_text
from nerf.metrics import psnr, ssim
from nerf.views import Views


class Evaluation(NamedTuple):
    names: tuple[str, ...]
    psnr: np.ndarray  # (n_views,) dB
    ssim: np.ndarray  # (n_views,)

    def summary(self) -> dict:
        """What goes to metrics/eval.json: means (PSNR as the mean of per-view dB)."""
        return {
            "psnr": _json_float(float(self.psnr.mean()), 4),
            "ssim": _json_float(float(self.ssim.mean()), 5),
            "psnr_min": _json_float(float(self.psnr.min()), 4),
            "psnr_max": _json_float(float(self.psnr.max()), 4),
            "n_views": len(self.names),
        }


def _json_float(value: float, digits: int) -> float | str:
    """Rounded float; +inf (a perfect render) becomes the string "inf" so the JSON stays valid."""
    return round(value, digits) if math.isfinite(value) else str(value)


def read_renders(renders: Path, views: Views) -> np.ndarray:
    """The render stage's ``<renders>/rgb/<view_filename>`` of every view: (n, h, w, 3)."""
    images = []
    for i, name in enumerate(views.names):
        path = renders / "rgb" / view_filename(i, name)
        if not path.is_file():
            raise DataError(f"{path}: render of test view {i} ({name}) not found; "
                            "run the render stage first (dvc repro render)")
        image = read_png(path)
        if image.shape != views.images[i].shape:
            raise DataError(f"{path}: render is {image.shape[1]}x{image.shape[0]} pixels, the test "
                            f"view {name} is {views.width}x{views.height}")
        images.append(image)
    return np.stack(images)


def evaluate(renders: np.ndarray, views: Views, config: EvalConfig) -> Evaluation:
    """PSNR and SSIM of renders (n, h, w, 3) against ``views``' images."""
    if views.n_views == 0:
        raise DataError("no test views to evaluate")
    if min(views.height, views.width) < config.min_image_side:
        raise DataError(f"{views.width}x{views.height} test images are too small for a "
                        f"{config.ssim_kernel}-pixel SSIM window")
    pred, truth = torch.from_numpy(renders), torch.from_numpy(views.images)
    return Evaluation(
        views.names,
        psnr(pred, truth).numpy(),
        ssim(pred, truth, config.ssim_kernel, config.ssim_sigma).numpy(),
    )


def _plot_png(result: Evaluation) -> bytes:
    """Bar chart of per-view PSNR with the mean as a dashed line, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    psnrs = result.psnr
    mean_psnr, mean_ssim = float(psnrs.mean()), float(result.ssim.mean())
    finite = np.where(np.isfinite(psnrs), psnrs, np.nan)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(psnrs) + 2), 3.2), dpi=100)
    ax.bar(np.arange(len(psnrs)), finite, color="tab:blue")
    ax.axhline(mean_psnr, color="tab:red", linestyle="--", label=f"mean {mean_psnr:.2f} dB")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # views, not 0.5 of one
    ax.set(xlabel="test view", ylabel="PSNR (dB)",
           title=f"mean PSNR {mean_psnr:.2f} dB, mean SSIM {mean_ssim:.4f}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_evaluation(result: Evaluation, metrics: Path, per_view: Path, plot: Path) -> None:
    """Writes the summary JSON, the per-view CSV (view,name,image,psnr,ssim; ``image`` is the
    render's file name without ``.png``, ``000_view_064``, which sorts as the views do: the
    label of ``dvc plots``' bars) and the PSNR plot.

    Everything is computed and written to temporary files before the first rename, the
    summary renamed last: a failure leaves all three old files in place, never a new summary
    beside an old table.
    """
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["view", "name", "image", "psnr", "ssim"])
    for i, name in enumerate(result.names):
        psnr, ssim = _json_float(float(result.psnr[i]), 4), _json_float(float(result.ssim[i]), 5)
        writer.writerow([i, name, view_filename(i, name).removesuffix(".png"), psnr, ssim])
    image = _plot_png(result)
    # Each file is written as soon as its context opens, so that an error names that file.
    with atomic_file(metrics) as json_tmp:
        json_tmp.write_text(json_text(result.summary()))
        with atomic_file(per_view) as csv_tmp:
            csv_tmp.write_text(table.getvalue())
            with atomic_file(plot) as png_tmp:
                png_tmp.write_bytes(image)
