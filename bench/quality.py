"""Quality against time: mean held-out PSNR at fixed training wall-clock points, per kind.

python -m bench.quality [--kinds fast nerf seed] [--points 5 10 30 60 120] [--devices cpu]
python -m bench.quality --by steps --points 50 100      # PSNR after fixed step counts
python -m bench.quality --set data.source=lego split.strategy=every_nth ...   # other data, params
python -m bench.quality --from A.csv B.csv --out AB   # earlier runs' CSVs on one plot, a line per file

Trains each kind with the pipeline's own loop and params.yaml's configs (with any --set
overrides) on the split that params describe (the embedded sample by default); whenever
training time (evaluation excluded) passes a time point, renders the held-out views and
records their mean PSNR, the render time per view and the peak GPU memory so far. Writes
bench/results/quality_<by>.csv and .png (PSNR against seconds or steps, one line per kind
and device; with --from, one line per CSV file, kind and device, labelled by the file's name).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from bench.common import (
    DEVICES,
    KINDS,
    REPO,
    add_params_arguments,
    count,
    devices,
    kernels,
    load_split,
    make_model,
    params_with,
    precision,
    show_progress,
    write_csv,
)
from nerf.errors import run_stage
from nerf.training import evaluate_views, machine, train


def curve(kind: str, device: torch.device, points: list[float], by: str, params_path: Path,
          overrides: list[str], steps: int | None, eval_views: int | None,
          on_row: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    """Trains ``kind`` and scores it at each point; ``on_row`` gets the rows so far after each."""
    params = params_with(params_path, kind, overrides)
    train_views, test_views = load_split(params.data.source, params.split)
    if eval_views is not None:
        test_views = test_views.subset(range(min(eval_views, test_views.n_views)))
    model = make_model(params.model, params, train_views, device, params.train.seed)
    pending = sorted(points)
    rows: list[dict] = []
    arithmetic = precision(params, device, model)
    compiled = params.train.compile
    used = kernels(device, model, arithmetic)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    print(f"{kind} on {device}: {train_views.n_views} training views of {train_views.width}x"
          f"{train_views.height}, {test_views.n_views} held out; {arithmetic}, compiled {compiled}, "
          f"kernels (hash, march, render, mlp) {'/'.join(used.values())}", flush=True)

    config = dataclasses.replace(params.train, steps=steps or params.train.steps, val_every=10**9)
    # GiB, training only: the device's peak is reset after each evaluation. NaN on the CPU.
    train_peak = 0.0 if device.type == "cuda" else float("nan")

    def record(step: int, seconds: float) -> None:
        nonlocal train_peak
        if device.type == "cuda":
            train_peak = max(train_peak, torch.cuda.max_memory_allocated(device) / 2**30)
        peak = train_peak
        if rows and rows[-1]["step"] == step:  # one step past several points: the same model
            psnr, render_s = rows[-1]["psnr"], rows[-1]["render_s_per_view"]
        else:
            started = time.perf_counter()
            psnr = evaluate_views(model, test_views, params.render.chunk, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            render_s = (time.perf_counter() - started) / test_views.n_views
        rows.append({"kind": kind, "device": machine(device), "precision": arithmetic, "compiled": compiled,
                     **used, "image": f"{test_views.width}x{test_views.height}",
                     "held_out_views": test_views.n_views, "schedule_steps": config.steps,
                     f"point_{by}": pending[0],
                     "seconds": round(seconds, 2), "step": step, "psnr": round(psnr, 3),
                     "render_s_per_view": round(render_s, 4), "peak_train_gib": round(peak, 2),
                     "overrides": " ".join(overrides)})
        memory = f"; peak training memory {peak:.2f} GiB" if device.type == "cuda" else ""
        tqdm.write(f"{kind} on {device}: {psnr:.2f} dB at {seconds:.1f} s (step {step}); render "
                   f"{render_s:.3f} s/view{memory}")  # above the training bar, if one is shown
        sys.stdout.flush()
        pending.pop(0)
        on_row(rows)

    def on_step(step: int, seconds: float) -> bool:
        while pending and (seconds if by == "seconds" else step) >= pending[0]:
            record(step, seconds)
        return not pending

    summary = train(model, train_views, None, config, device, progress=show_progress(), on_step=on_step)
    while pending:  # training ended before the last time point: its final model counts
        record(summary.steps, summary.seconds)
    return rows


def _write_after(path: Path, earlier: list[dict], rows: list[dict]) -> None:
    write_csv(path, earlier + rows)


def _named(stem: Path, suffix: str) -> Path:
    """``--out``'s CSV or PNG: ``lr_1.5`` -> ``lr_1.5.csv`` (a dot in the stem is kept),
    ``q.csv`` -> ``q.png`` for the plot."""
    return stem.with_suffix(suffix) if stem.suffix in (".csv", ".png") else stem.with_name(stem.name + suffix)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def plot(rows: list[dict], path: Path, x: str) -> None:
    """PSNR against ``x`` (seconds or step), one line per row label (``label`` where rows have
    one, else kind and device)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    def label(row: dict) -> str:
        run = f"{row['kind']} ({row['device']})"
        return f"{row['label']}: {run}" if row.get("label") else run

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in dict.fromkeys(label(r) for r in rows):
        points = [r for r in rows if label(r) == key]
        ax.plot([float(r[x]) for r in points], [float(r["psnr"]) for r in points], marker="o", label=key)
    ax.set_xscale("log")
    point = "point_seconds" if x == "seconds" else "point_steps"
    ticks = sorted({float(r[point]) for r in rows if r.get(point)})
    if ticks:  # the scoring points, as plain numbers (log ticks within a decade run together)
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("training seconds (evaluation excluded)" if x == "seconds" else "training steps")
    ax.set_ylabel("mean held-out PSNR (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["fast", "nerf", "seed"], choices=KINDS)
    parser.add_argument("--devices", nargs="+", default=["cpu"], choices=DEVICES)
    parser.add_argument("--points", nargs="+", type=_positive, default=[5, 10, 30, 60, 120],
                        help="training seconds (or steps, --by steps) at which to score")
    parser.add_argument("--by", choices=["seconds", "steps"], default="seconds",
                        help="points are training seconds or step counts")
    parser.add_argument("--steps", type=count(1), default=None, help="schedule length (default: train.steps)")
    parser.add_argument("--eval-views", type=count(1), default=None,
                        help="held-out views scored (default: all)")
    add_params_arguments(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV/PNG path stem (default: bench/results/quality_<by>)")
    parser.add_argument("--from", nargs="+", type=Path, default=None, dest="replot", metavar="CSV",
                        help="train nothing: draw these CSVs of earlier runs on one plot (--out's PNG)")
    args = parser.parse_args()
    args.out = args.out or REPO / "bench" / "results" / f"quality_{args.by}"
    x = "seconds" if args.by == "seconds" else "step"
    if args.replot:
        rows = []
        for path in args.replot:
            if not path.is_file():
                parser.error(f"--from: no file {path}")
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not {x, "psnr"} <= set(reader.fieldnames or ()):
                    parser.error(f"--from: {path} has no {x} and psnr columns (not a bench.quality CSV)")
                rows += [row | {"label": path.stem} for row in reader]
        plot(rows, _named(args.out, ".png"), x)
        print(f"wrote {_named(args.out, '.png')}")
        return
    rows: list[dict] = []
    for device in devices(args.devices):
        for kind in args.kinds:
            # Rewritten at each point: a run cut off (a time limit, a crash) keeps what it scored.
            keep = functools.partial(_write_after, _named(args.out, ".csv"), list(rows))
            rows += curve(kind, device, args.points, args.by, args.params, args.overrides, args.steps,
                          args.eval_views, on_row=keep)
    plot(rows, _named(args.out, ".png"), x)
    print(f"wrote {_named(args.out, '.csv')} and {_named(args.out, '.png')}")


if __name__ == "__main__":
    run_stage(main)
