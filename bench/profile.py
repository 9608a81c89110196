"""Where a training step's time goes: the top operators and kernels per model kind.

python -m bench.profile [--kinds seed fast] [--device cuda] [--steps 10] [--set train.precision=bf16]

Warms each kind up with the pipeline's own loop, then profiles ``--steps`` more steps with
torch.profiler and prints the operators with the most device time (CPU time on the CPU).
Writes the tables to bench/results/profile_<kind>_<device>.txt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from bench.common import (
    DEVICES,
    KINDS,
    REPO,
    add_params_arguments,
    count,
    devices,
    load_split,
    make_model,
    params_with,
    precision,
    without_budget,
)
from nerf.errors import run_stage
from nerf.training import machine, train


def profile_kind(kind: str, device: torch.device, steps: int, warmup: int, params_path: Path,
                 overrides: list[str], rows: int) -> str:
    params = params_with(params_path, kind, overrides)
    train_views, _ = load_split(params.data.source, params.split)
    model = make_model(params.model, params, train_views, device, params.train.seed)
    # One run of warmup + steps steps, recorded only after the warm-up: the loop's set-up (the
    # views' upload, their rays) stays out of the table, and the occupancy grid keeps its cadence.
    config = without_budget(params.train, steps=warmup + steps, val_every=10**9, checkpoint_every=0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    recorded = schedule(wait=max(warmup - 1, 0), warmup=min(warmup, 1), active=steps, repeat=1)
    before = {"seconds": 0.0}  # training seconds at the end of the warm-up

    def on_step(step: int, seconds: float) -> bool:
        if step == warmup:
            before["seconds"] = seconds
        prof.step()
        return False

    with profile(activities=activities, schedule=recorded) as prof:
        summary = train(model, train_views, None, config, device, progress=False, on_step=on_step)
    seconds = summary.seconds - before["seconds"]
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    arithmetic = precision(params, device, model)
    head = (f"{kind} on {machine(device)}, {arithmetic}, compiled {params.train.compile}: {steps} steps in "
            f"{seconds:.3f} s ({steps / seconds:.1f} steps/s while profiled), "
            f"after {warmup} warm-up steps of the same run; sorted by {sort}")
    return head + "\n" + prof.key_averages().table(sort_by=sort, row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["seed", "fast"], choices=KINDS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=DEVICES)
    parser.add_argument("--steps", type=count(1), default=10, help="profiled steps per kind")
    parser.add_argument("--warmup", type=count(0), default=10)
    parser.add_argument("--rows", type=int, default=20, help="operators listed")
    add_params_arguments(parser)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for the tables")
    args = parser.parse_args()
    (device,) = devices([args.device])
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        table = profile_kind(kind, device, args.steps, args.warmup, args.params, args.overrides, args.rows)
        print(table, flush=True)
        (args.out / f"profile_{kind}_{device.type}.txt").write_text(table + "\n")


if __name__ == "__main__":
    run_stage(main)
