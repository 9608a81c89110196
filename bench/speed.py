"""Speed per model kind and device: steps/s, rays/s, samples/s and peak memory.

python -m bench.speed [--kinds seed nerf fast] [--devices cpu cuda] [--steps 10] [--set train.precision=fp32]

Uses params.yaml's model configs on the embedded sample split; prints a line per kind and
writes bench/results/speed.csv (rewritten after each kind). ``steps_per_s`` and the rates
beside it are medians over the timed steps after the warm-up steps, so they leave out
``fast``'s occupancy-grid updates (every 16th step, 2-4x as long on a CPU);
``steps_per_s_overall`` is timed steps over their total time, updates included, what a
training run sees. Peak memory is the GPU's peak allocation, or on the CPU the process's peak
resident set while the kind ran (Linux; elsewhere the process's peak so far, data included).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
from pathlib import Path

import torch

from bench.common import (
    DEVICES,
    KINDS,
    REPO,
    SampleCounter,
    add_params_arguments,
    count,
    devices,
    kernels,
    load_split,
    make_model,
    params_with,
    precision,
    show_progress,
    without_budget,
    write_csv,
)
from nerf.errors import run_stage
from nerf.training import machine, train


def _reset_peak_rss() -> None:
    """Linux: restarts the process's peak resident set (VmHWM), so that it is this kind's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the process's so far
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes there, kB on Linux


def measure(kind: str, device: torch.device, steps: int, warmup: int, params_path: Path,
            overrides: list[str]) -> dict:
    """Trains ``kind`` for warmup + steps steps with the pipeline's own loop, timing each."""
    params = params_with(params_path, kind, overrides)
    train_views, _ = load_split(params.data.source, params.split)
    model = make_model(params.model, params, train_views, device, params.train.seed)
    counter = SampleCounter(model)
    pixels = train_views.height * train_views.width
    batch = lambda: model.rays_per_batch() or pixels  # None: one whole image
    times, samples, rays = [], [], [batch()]
    last = 0.0

    def on_step(step: int, seconds: float) -> bool:
        nonlocal last
        times.append(seconds - last)
        last = seconds
        samples.append(counter.count)
        counter.count = 0
        rays.append(batch())
        return False

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _reset_peak_rss()
    config = without_budget(params.train, steps=warmup + steps, val_every=10**9)
    train(model, train_views, None, config, device, progress=show_progress(), on_step=on_step)
    step_s = statistics.median(times[warmup:])
    n_rays, n_samples = statistics.median(rays[warmup:-1]), statistics.median(samples[warmup:])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else _peak_rss_gib()
    arithmetic = precision(params, device, model)
    return {
        "kind": kind,
        "device": machine(device),
        "precision": arithmetic,
        "compiled": params.train.compile,
        **kernels(device, model, arithmetic),
        "steps_per_s": round(1 / step_s, 3),
        "steps_per_s_overall": round(steps / sum(times[warmup:]), 3),
        "rays_per_s": round(n_rays / step_s),
        "samples_per_s": round(n_samples / step_s),
        "rays_per_step": n_rays,
        "samples_per_step": n_samples,
        "peak_memory_gib": round(peak, 2),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "overrides": " ".join(overrides),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["seed", "nerf", "fast"], choices=KINDS)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=DEVICES,
                        help="a missing one is skipped")
    parser.add_argument("--steps", type=count(1), default=10, help="timed steps per kind")
    parser.add_argument("--warmup", type=count(0), default=3, help="untimed steps before them")
    add_params_arguments(parser)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed.csv")
    args = parser.parse_args()
    rows = []
    for device in devices(args.devices):
        for kind in args.kinds:
            row = measure(kind, device, args.steps, args.warmup, args.params, args.overrides)
            print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            rows.append(row)
            write_csv(args.out, rows)  # after each kind: a later failure keeps these rows
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
