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
and device; with --from, one line per CSV file, labelled by its name).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import torch

from bench.common import (
    REPO,
    add_params_arguments,
    devices,
    kernels,
    load_split,
    machine,
    make_model,
    params_with,
    precision,
    write_csv,
)
from nerf.errors import run_stage
from nerf.training import evaluate_views, train


def curve(kind: str, device: torch.device, points: list[float], by: str, params_path: Path,
          overrides: list[str], steps: int | None, eval_views: int | None) -> list[dict]:
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

    # GiB, training only: the device's peak is reset after each evaluation. NaN on the CPU.
    train_peak = 0.0 if device.type == "cuda" else float("nan")

    def record(step: int, seconds: float) -> None:
        nonlocal train_peak
        if device.type == "cuda":
            train_peak = max(train_peak, torch.cuda.max_memory_allocated(device) / 2**30)
        peak = train_peak
        started = time.perf_counter()
        psnr = evaluate_views(model, test_views, params.render.chunk, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        render_s = (time.perf_counter() - started) / test_views.n_views
        rows.append({"kind": kind, "device": machine(device), "precision": arithmetic, "compiled": compiled,
                     **used, "image": f"{test_views.width}x{test_views.height}",
                     f"point_{by}": pending[0],
                     "seconds": round(seconds, 2), "step": step, "psnr": round(psnr, 3),
                     "render_s_per_view": round(render_s, 4), "peak_train_gib": round(peak, 2),
                     "overrides": " ".join(overrides)})
        memory = f"; peak training memory {peak:.2f} GiB" if device.type == "cuda" else ""
        print(f"{kind} on {device}: {psnr:.2f} dB at {seconds:.1f} s (step {step}); render "
              f"{render_s:.3f} s/view{memory}", flush=True)
        pending.pop(0)

    def on_step(step: int, seconds: float) -> bool:
        while pending and (seconds if by == "seconds" else step) >= pending[0]:
            record(step, seconds)
        return not pending

    config = dataclasses.replace(params.train, steps=steps or params.train.steps, val_every=10**9)
    summary = train(model, train_views, None, config, device, progress=False, on_step=on_step)
    while pending:  # training ended before the last time point: its final model counts
        record(summary.steps, summary.seconds)
    return rows


def plot(rows: list[dict], path: Path, x: str) -> None:
    """PSNR against ``x`` (seconds or step), one line per row label (``label`` where rows have
    one, else kind and device)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def label(row: dict) -> str:
        return row.get("label") or f"{row['kind']} ({row['device']})"

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in dict.fromkeys(label(r) for r in rows):
        points = [r for r in rows if label(r) == key]
        ax.plot([float(r[x]) for r in points], [float(r["psnr"]) for r in points], marker="o", label=key)
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (evaluation excluded)" if x == "seconds" else "training steps")
    ax.set_ylabel("mean held-out PSNR (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["fast", "nerf", "seed"])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--points", nargs="+", type=float, default=[5, 10, 30, 60, 120])
    parser.add_argument("--by", choices=["seconds", "steps"], default="seconds",
                        help="points are training seconds or step counts")
    parser.add_argument("--steps", type=int, default=None, help="schedule length (default: train.steps)")
    parser.add_argument("--eval-views", type=int, default=None, help="held-out views used (default: all)")
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
        plot(rows, args.out.with_suffix(".png"), x)
        print(f"wrote {args.out.with_suffix('.png')}")
        return
    rows = []
    for device in devices(args.devices):
        for kind in args.kinds:
            rows += curve(kind, device, args.points, args.by, args.params, args.overrides, args.steps,
                          args.eval_views)
    write_csv(args.out.with_suffix(".csv"), rows)
    plot(rows, args.out.with_suffix(".png"), x)
    print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    run_stage(main)
