"""Speed per model kind and device: steps/s, rays/s, samples/s and peak memory.

python -m bench.speed [--kinds seed nerf fast] [--devices cpu cuda] [--steps 20] [--set train.precision=fp32]

Uses params.yaml's model configs on the embedded sample split; prints a table and writes
bench/results/speed.csv. Medians over timed steps after warm-up steps; peak memory is the GPU's
peak allocation, or the process's peak resident set on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
from pathlib import Path

import torch

from bench.common import (
    REPO,
    SampleCounter,
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
from nerf.training import train


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
    config = dataclasses.replace(params.train, steps=warmup + steps, val_every=10**9)
    train(model, train_views, None, config, device, progress=False, on_step=on_step)
    step_s = statistics.median(times[warmup:])
    n_rays, n_samples = statistics.median(rays[warmup:-1]), statistics.median(samples[warmup:])
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    arithmetic = precision(params, device, model)
    return {
        "kind": kind,
        "device": machine(device),
        "precision": arithmetic,
        "compiled": params.train.compile,
        **kernels(device, model, arithmetic),
        "steps_per_s": round(1 / step_s, 3),
        "rays_per_s": round(n_rays / step_s),
        "samples_per_s": round(n_samples / step_s),
        "rays_per_step": n_rays,
        "samples_per_step": n_samples,
        "peak_memory_gib": round(peak, 2),
        "timed_steps": steps,
        "overrides": " ".join(overrides),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["seed", "nerf", "fast"])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per kind")
    parser.add_argument("--warmup", type=int, default=3)
    add_params_arguments(parser)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed.csv")
    args = parser.parse_args()
    rows = []
    for device in devices(args.devices):
        for kind in args.kinds:
            row = measure(kind, device, args.steps, args.warmup, args.params, args.overrides)
            print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            rows.append(row)
    write_csv(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
