"""The evaluate stage end to end, as a subprocess in a temporary folder."""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nerf.config import EvalConfig, Params, to_dict
from nerf.errors import DataError
from nerf.evaluation import Evaluation, evaluate
from nerf.images import read_png, view_filename, write_png
from nerf.metrics import psnr, ssim
from nerf.views import Views, save_views

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("test/r_5", "test/r_0", "val/r_7")  # not in sorted order: rows must keep the views'


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """tmp_path with params.yaml, data/split/test.npz (3 views, 16x20) and noisy renders."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(Params())))
    rng = np.random.default_rng(0)
    images = rng.random((3, 16, 20, 3)).astype(np.float32)
    poses = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
    save_views(tmp_path / "data/split/test.npz",
               Views(images, poses, 20.0, NAMES, np.zeros(3, np.float32)))
    for i, (image, sd) in enumerate(zip(images, (0.02, 0.05, 0.1))):
        write_png(tmp_path / "renders/rgb" / view_filename(i, NAMES[i]),
                  image + sd * rng.standard_normal(image.shape).astype(np.float32))
    return tmp_path


def run_evaluate(cwd: Path, max_file_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """The stage as dvc.yaml runs it; ``max_file_bytes``: the largest file the process may
    write (RLIMIT_FSIZE: a longer write fails with EFBIG, as a full disk fails one)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal's kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, str(ROOT / "stages/evaluate.py"), "--test", "data/split/test.npz",
         "--renders", "renders", "--metrics", "metrics/eval.json",
         "--per-view", "metrics/per_view.csv", "--plot", "metrics/per_view_psnr.png"],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120, check=False, preexec_fn=None if max_file_bytes is None else limit,
    )


def test_evaluate_writes_metrics_csv_and_plot(workdir: Path) -> None:
    result = run_evaluate(workdir)
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout

    from nerf.views import load_views

    truth = torch.from_numpy(load_views(workdir / "data/split/test.npz").images)
    pred = torch.from_numpy(np.stack([
        read_png(workdir / "renders/rgb" / view_filename(i, n)) for i, n in enumerate(NAMES)
    ]))
    # Direct computation: per-view MSE -> dB, arithmetic mean of dB values.
    mse = ((pred.double() - truth.double()) ** 2).mean(dim=(1, 2, 3)).numpy()
    want_psnr = -10 * np.log10(mse)
    want_ssim = ssim(pred, truth).numpy()
    assert np.allclose(psnr(pred, truth).numpy(), want_psnr)
    assert want_psnr[0] > want_psnr[1] > want_psnr[2]  # noise levels 0.02 < 0.05 < 0.1

    summary = json.loads((workdir / "metrics/eval.json").read_text())
    assert summary["n_views"] == 3
    assert summary["psnr"] == pytest.approx(want_psnr.mean(), abs=1e-4)
    assert summary["ssim"] == pytest.approx(want_ssim.mean(), abs=1e-5)
    assert summary["psnr_min"] == pytest.approx(want_psnr.min(), abs=1e-4)
    assert summary["psnr_max"] == pytest.approx(want_psnr.max(), abs=1e-4)

    with open(workdir / "metrics/per_view.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["view"] for r in rows] == ["0", "1", "2"]
    assert [r["name"] for r in rows] == list(NAMES)
    assert [r["image"] + ".png" for r in rows] == [view_filename(i, n) for i, n in enumerate(NAMES)]
    assert [float(r["psnr"]) for r in rows] == pytest.approx(want_psnr.tolist(), abs=1e-4)
    assert [float(r["ssim"]) for r in rows] == pytest.approx(want_ssim.tolist(), abs=1e-5)
    # Rounded as in eval.json: 4 decimals of PSNR, 5 of SSIM (a diff shows changes, not noise).
    assert all(len(r["psnr"].partition(".")[2]) <= 4 and len(r["ssim"].partition(".")[2]) <= 5 for r in rows)

    plot = workdir / "metrics/per_view_psnr.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (workdir / "metrics").iterdir() if p.name.startswith(".")]


def test_missing_render_fails_and_keeps_old_metrics(workdir: Path) -> None:
    old = '{"psnr": 1.0}\n'
    (workdir / "metrics").mkdir()
    (workdir / "metrics/eval.json").write_text(old)
    missing = workdir / "renders/rgb" / view_filename(1, NAMES[1])
    missing.unlink()

    result = run_evaluate(workdir)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "001_test_r_0.png" in lines[0] and "render stage" in lines[0]
    assert (workdir / "metrics/eval.json").read_text() == old
    assert sorted(p.name for p in (workdir / "metrics").iterdir()) == ["eval.json"]


def test_an_output_that_cannot_be_written_keeps_all_three_old_ones(workdir: Path) -> None:
    metrics = workdir / "metrics"
    (metrics / "per_view_psnr.png").mkdir(parents=True)  # a folder where the plot goes
    (metrics / "per_view_psnr.png/x").write_text("")
    (metrics / "eval.json").write_text('{"psnr": 1.0}\n')
    (metrics / "per_view.csv").write_text("view,name,psnr,ssim\n")

    result = run_evaluate(workdir)
    assert result.returncode == 1
    assert result.stderr == "error: metrics/per_view_psnr.png: cannot write it (Is a directory)\n"
    assert (metrics / "eval.json").read_text() == '{"psnr": 1.0}\n'
    assert (metrics / "per_view.csv").read_text() == "view,name,psnr,ssim\n"
    assert sorted(p.name for p in metrics.iterdir()) == ["eval.json", "per_view.csv", "per_view_psnr.png"]


def test_a_failed_write_names_the_file_being_written(workdir: Path) -> None:
    """Files over 40 bytes cannot be written: the summary, the first written, fails, and the
    error names it (not the plot, whose temporary file is open by then too)."""
    metrics = workdir / "metrics"
    metrics.mkdir()
    (metrics / "eval.json").write_text('{"psnr": 1.0}\n')
    result = run_evaluate(workdir, max_file_bytes=40)
    assert result.returncode == 1
    assert result.stderr == "error: metrics/eval.json: cannot write it (File too large)\n"
    assert sorted(p.name for p in metrics.iterdir()) == ["eval.json"]
    assert (metrics / "eval.json").read_text() == '{"psnr": 1.0}\n'


def test_render_of_wrong_size_fails(workdir: Path) -> None:
    write_png(workdir / "renders/rgb" / view_filename(2, NAMES[2]), np.zeros((8, 10, 3)))
    result = run_evaluate(workdir)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "002_val_r_7.png" in result.stderr
    assert "10x8" in result.stderr and "20x16" in result.stderr
    assert not (workdir / "metrics").exists()


def test_perfect_renders_give_inf_psnr_as_valid_json(workdir: Path) -> None:
    from nerf.views import load_views

    for i, image in enumerate(load_views(workdir / "data/split/test.npz").images):
        write_png(workdir / "renders/rgb" / view_filename(i, NAMES[i]), image)
    # Truth must equal the 8-bit PNG exactly for an infinite PSNR: quantize the truth too.
    views = load_views(workdir / "data/split/test.npz")
    quantized = np.stack([read_png(workdir / "renders/rgb" / view_filename(i, n))
                          for i, n in enumerate(NAMES)])
    save_views(workdir / "data/split/test.npz", Views(quantized, views.poses, views.focal,
                                                      views.names, views.background))
    result = run_evaluate(workdir)
    assert result.returncode == 0, result.stderr
    summary = json.loads((workdir / "metrics/eval.json").read_text())
    assert summary["psnr"] == "inf" and math.isinf(float(summary["psnr"]))
    assert summary["ssim"] == pytest.approx(1.0)


def _bars(psnrs: list[float]):
    """The per-view plot of views with these PSNRs: its bar heights, ∞ marks' views, dashed
    lines' heights and title."""
    from matplotlib import pyplot as plt

    from nerf.evaluation import _plot

    names = tuple(f"v{i}" for i in range(len(psnrs)))
    fig = _plot(Evaluation(names, np.array(psnrs), np.full(len(psnrs), 0.9)))
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    marks = [round(text.xy[0]) for text in ax.texts if text.get_text() == "∞"]
    lines = [line.get_ydata()[0] for line in ax.get_lines()]
    title = ax.get_title()
    plt.close(fig)
    return heights, marks, lines, title


def test_a_perfect_views_bar_stands_above_the_others_marked_infinite() -> None:
    heights, marks, lines, title = _bars([25.0, math.inf, 30.0])
    assert np.isfinite(heights).all() and heights[0] == 25 and heights[2] == 30 and heights[1] > 30
    assert marks == [1] and lines == [pytest.approx(27.5)]  # the others' mean
    assert title.startswith("mean PSNR ∞ (1 of 3 views identical to their truth)")

    heights, marks, lines, title = _bars([math.inf, math.inf])
    assert np.isfinite(heights).all() and marks == [0, 1] and lines == []
    heights, marks, lines, title = _bars([25.0, 27.0, 31.0])
    assert heights == [25, 27, 31] and marks == [] and lines == [pytest.approx(83 / 3)]
    assert title == "mean PSNR 27.67 dB, mean SSIM 0.9000"


def _views(n: int, side: int, width: int | None = None) -> Views:
    rng = np.random.default_rng(0)
    images = rng.random((n, side, width or side, 3), dtype=np.float32)
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    return Views(images, poses, 10.0, tuple(f"v{i}" for i in range(n)), np.zeros(3, np.float32))


def test_evaluate_takes_the_smallest_views_the_ssim_window_fits_and_refuses_the_rest() -> None:
    config = EvalConfig()  # an 11-pixel window: 6 pixels a side are the fewest it fits
    views = _views(2, config.min_image_side)
    result = evaluate(views.images * 0.9, views, config)
    assert result.psnr.shape == result.ssim.shape == (2,) and np.isfinite(result.psnr).all()
    small = _views(2, config.min_image_side - 1)
    with pytest.raises(DataError, match="5x5 test images are too small for a 11-pixel SSIM window"):
        evaluate(small.images, small, config)
    wide = _views(2, config.min_image_side - 1, width=40)  # width x height, as everywhere
    with pytest.raises(DataError, match="^40x5 test images are too small"):
        evaluate(wide.images, wide, config)
    with pytest.raises(DataError, match="no test views to evaluate"):
        evaluate(np.zeros((0, 6, 6, 3), np.float32), views.subset([]), config)


def test_a_perfect_views_bar_is_green_its_mark_inside_the_axes_and_the_legend_names_the_mean() -> None:
    from matplotlib import pyplot as plt
    from matplotlib.colors import to_rgba

    from nerf.evaluation import _plot

    # The others far apart: the perfect bar must top their highest, not their mean (30).
    fig = _plot(Evaluation(("a", "b", "c"), np.array([20.0, math.inf, 40.0]), np.full(3, 0.9)))
    ax = fig.axes[0]
    assert ax.patches[1].get_height() > 40
    assert ax.patches[1].get_facecolor() == to_rgba("tab:green")
    assert ax.patches[0].get_facecolor() == ax.patches[2].get_facecolor() == to_rgba("tab:blue")
    fig.canvas.draw()
    (mark,) = [text for text in ax.texts if text.get_text() == "∞"]
    assert mark.get_window_extent().y1 <= ax.get_window_extent().y1  # drawn inside the axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean of the others 30.00 dB"]
    plt.close(fig)
    # All perfect: bars that read as high PSNR, not as a few dB.
    fig = _plot(Evaluation(("a", "b"), np.array([math.inf, math.inf]), np.full(2, 1.0)))
    assert min(bar.get_height() for bar in fig.axes[0].patches) >= 40
    plt.close(fig)
    fig = _plot(Evaluation(("a", "b"), np.array([25.0, 27.0]), np.full(2, 0.9)))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["mean 26.00 dB"]
    plt.close(fig)


def test_the_per_view_plot_names_its_bars_by_the_render_files_a_crowd_one_in_k() -> None:
    from matplotlib import pyplot as plt

    from nerf.evaluation import MAX_LABELS, _plot

    def labels(n: int) -> tuple[list[float], list[str], str, float]:
        fig = _plot(Evaluation(tuple(f"test/r_{i}" for i in range(n)), np.full(n, 30.0), np.full(n, 0.9)))
        ax = fig.axes[0]
        ticks = list(ax.get_xticks())
        texts = [label.get_text() for label in ax.get_xticklabels()]
        xlabel, width = ax.get_xlabel(), fig.get_figwidth()
        plt.close(fig)
        return ticks, texts, xlabel, width

    ticks, texts, xlabel, _ = labels(3)
    assert ticks == [0, 1, 2] and xlabel == "test view"
    assert texts == [view_filename(i, f"test/r_{i}").removesuffix(".png") for i in range(3)]
    assert texts[2] == "002_test_r_2"  # as in renders/compare/
    ticks, texts, xlabel, crowd_width = labels(3 * MAX_LABELS + 1)  # one in 4 named
    assert ticks == list(range(0, 3 * MAX_LABELS + 1, 4)) and len(texts) <= MAX_LABELS
    assert texts[1] == view_filename(4, "test/r_4").removesuffix(".png")
    assert xlabel == "test view (one in 4 named)"
    assert labels(MAX_LABELS)[0] == list(range(MAX_LABELS))  # as many as fit, all named
    assert crowd_width == labels(MAX_LABELS)[3]  # the figure stops growing where names thin out
