"""Where a training step's time goes: the top operators and kernels per model kind.

python -m bench.profile [--kinds seed fast] [--device cuda] [--steps 10] [--set train.precision=bf16]

Warms each kind up with the pipeline's own loop, then profiles ``--steps`` more steps with
torch.profiler and prints the operators with the most device time (CPU time on the CPU).
Writes the tables to bench/results/profile_<kind>_<device>.txt.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import REPO, add_params_arguments, load_split, machine, make_model, params_with, precision
from nerf.errors import run_stage
from nerf.training import train


def profile_kind(kind: str, device: torch.device, steps: int, warmup: int, params_path: Path,
                 overrides: list[str], rows: int) -> str:
    params = params_with(params_path, kind, overrides)
    train_views, _ = load_split(params.data.source, params.split)
    model = make_model(params.model, params, train_views, device, params.train.seed)
    config = dataclasses.replace(params.train, val_every=10**9, checkpoint_every=0)
    train(model, train_views, None, dataclasses.replace(config, steps=warmup), device, progress=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        summary = train(model, train_views, None, dataclasses.replace(config, steps=steps), device,
                        progress=False)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    arithmetic = precision(params, device, model)
    head = (f"{kind} on {machine(device)}, {arithmetic}, compiled {params.train.compile}: {steps} steps in "
            f"{summary.seconds:.3f} s ({steps / summary.seconds:.1f} steps/s while profiled), "
            f"after {warmup} warm-up steps; sorted by {sort}")
    return head + "\n" + prof.key_averages().table(sort_by=sort, row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["seed", "fast"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps per kind")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rows", type=int, default=20, help="operators listed")
    add_params_arguments(parser)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for the tables")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        table = profile_kind(kind, device, args.steps, args.warmup, args.params, args.overrides, args.rows)
        print(table, flush=True)
        (args.out / f"profile_{kind}_{device.type}.txt").write_text(table + "\n")


if __name__ == "__main__":
    run_stage(main)
