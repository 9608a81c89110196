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


MAX_LABELS = 40  # view names under the per-view plot's bars, at most


def _plot(result: Evaluation):
    """Bar chart of per-view PSNR with the mean as a dashed line (a matplotlib Figure).

    A render identical to its truth (PSNR +inf) gets a bar above every other one, marked ∞;
    the dashed line is then the other views' mean, and the title says how many were perfect.
    The bars are labelled with the renders' file names (``000_view_064``, as in
    ``renders/compare/``), every ``k``-th of them where more than ``MAX_LABELS`` would crowd.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    psnrs, mean_ssim = result.psnr, float(result.ssim.mean())
    perfect = np.isinf(psnrs)
    others = psnrs[~perfect]
    top = (float(others.max()) if others.size else 40.0) + 5.0  # where a perfect view's bar ends
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * min(len(psnrs), MAX_LABELS) + 2), 4.2), dpi=100)
    ax.bar(np.arange(len(psnrs)), np.where(perfect, top, psnrs),
           color=np.where(perfect, "tab:green", "tab:blue"))
    for view in np.flatnonzero(perfect):
        ax.annotate("∞", (view, top), ha="center", va="bottom")
    every = math.ceil(len(psnrs) / MAX_LABELS)
    labelled = np.arange(0, len(psnrs), every)
    ax.set_xticks(labelled, [view_filename(int(i), result.names[i]).removesuffix(".png") for i in labelled],
                  rotation=90, fontsize="small")
    ax.set_xlim(-0.6, len(psnrs) - 0.4)
    ax.set(xlabel="test view" + (f" (one in {every} named)" if every > 1 else ""), ylabel="PSNR (dB)")
    if others.size:
        label = "mean" if not perfect.any() else "mean of the others"
        ax.axhline(float(others.mean()), color="tab:red", linestyle="--",
                   label=f"{label} {others.mean():.2f} dB")
        ax.legend(loc="lower right")
    if perfect.any():
        ax.set_ylim(top=top * 1.12)  # room for the ∞ marks
        ax.set_title(f"mean PSNR ∞ ({perfect.sum()} of {len(psnrs)} views identical to their truth)\n"
                     f"mean SSIM {mean_ssim:.4f}", fontsize="medium")
    else:
        ax.set_title(f"mean PSNR {others.mean():.2f} dB, mean SSIM {mean_ssim:.4f}")
    fig.tight_layout()
    return fig


def _plot_png(result: Evaluation) -> bytes:
    """:func:`_plot` as PNG bytes."""
    from matplotlib import pyplot as plt

    fig = _plot(result)
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
