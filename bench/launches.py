"""Work dispatched per fast training step: CUDA kernel launches on a GPU, tensor operations
on the CPU, for each kernel choice (the PyTorch code, the Triton kernels).

python -m bench.launches [--device cuda] [--steps 16] [--set model.fast.samples_per_batch=262144]

Where a step is bound by the host (fast at full size on an H100: ~4 ms of GPU work in a
~8 ms step), each launch costs host time whatever its size, so their count per step is
what the Triton kernels and the spherical-harmonics rewrite set out to cut.

On CUDA it counts the kernels and copies the profiler saw on the GPU. Without CUDA it
counts the top-level ATen operations, less the views (no kernel on a GPU) and the copies
that Triton's interpreter adds, with the Triton kernels run in the interpreter
(TRITON_INTERPRET=1, set here): a proxy for the GPU's launches, except that the CPU's Adam
is ~8 unfused operations per parameter tensor where CUDA runs one fused kernel (reported
apart), and copies (copy_) are left out with the interpreter's. Writes bench/results/launches_<device>.csv.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

from torch.profiler import DeviceType, ProfilerActivity, profile

from bench.common import (
    DEVICES,
    KERNEL_KEYS,
    REPO,
    add_params_arguments,
    count,
    devices,
    kernels,
    load_split,
    make_model,
    params_with,
    precision,
    without_budget,
    write_csv,
)
from nerf.errors import ConfigError, run_stage
from nerf.training import machine, train

# Operations that launch nothing on a GPU (views, no-op conversions) and the copies Triton's
# interpreter makes of the kernels' arguments.
NO_LAUNCH = {"aten::view", "aten::unsqueeze", "aten::reshape", "aten::select", "aten::slice", "aten::t",
             "aten::unbind", "aten::expand", "aten::expand_as", "aten::squeeze", "aten::detach",
             "aten::alias", "aten::as_strided", "aten::transpose", "aten::permute", "aten::narrow",
             "aten::item", "aten::empty", "aten::new_empty", "aten::set_", "aten::copy_", "aten::empty_like",
             "aten::broadcast_tensors", "aten::lift_fresh"}
CONVERSIONS = {"aten::to", "aten::contiguous"}  # a launch only where they copy
ADAM = "Optimizer.step#Adam.step"


def _counts(events, device: torch.device) -> tuple[collections.Counter, int]:
    """(launches by name, of which inside Adam's step)."""
    counted: collections.Counter = collections.Counter()
    in_adam = 0
    for event in events:
        if device.type == "cuda":
            if event.device_type != DeviceType.CUDA:
                continue
        elif not event.name.startswith("aten::") or event.name in NO_LAUNCH or (
            event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::")
        ) or (event.name in CONVERSIONS and not any(
            child.name in ("aten::_to_copy", "aten::clone") for child in event.cpu_children
        )):
            continue
        counted[event.name] += 1
        parent = event.cpu_parent
        while parent is not None and parent.name != ADAM:
            parent = parent.cpu_parent
        in_adam += parent is not None
    return counted, in_adam


def count_launches(
    params_path: Path, overrides: list[str], device: torch.device, steps: int, warmup: int
) -> dict:
    params = params_with(params_path, "fast", overrides)
    train_views, _ = load_split(params.data.source, params.split)
    model = make_model(params.model, params, train_views, device, params.train.seed)
    config = without_budget(params.train, val_every=10**9, checkpoint_every=0, log_every=10**9)
    every = params.model.fast.grid_update_every
    if steps % every:
        raise ConfigError(f"--steps {steps}: expected a multiple of model.fast.grid_update_every ({every}), "
                          "so that both profiled runs have the same grid updates")
    train(model, train_views, None, dataclasses.replace(config, steps=warmup), device, progress=False)
    # Two profiled runs of different lengths: their difference is the steps alone, without
    # each run's setup (uploading the views, building the optimizer).
    measured = []
    for n in (steps, 2 * steps):
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            train(model, train_views, None, dataclasses.replace(config, steps=n), device, progress=False)
        measured.append(_counts(prof.events(), device))
    (short, short_adam), (long, long_adam) = measured
    per_step = {name: (long[name] - short[name]) / steps for name in long}
    top = sorted(per_step.items(), key=lambda item: -item[1])[:8]
    return {
        "device": machine(device),
        **kernels(device, model, precision(params, device, model)),
        "launches_per_step": round(sum(per_step.values()), 1),
        "of_which_adam": round((long_adam - short_adam) / steps, 1),
        "top": "; ".join(f"{name} {count:g}" for name, count in top),
        "overrides": " ".join(overrides),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.launches", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=DEVICES)
    parser.add_argument("--steps", type=count(1), default=16,
                        help="profiled steps (a multiple of grid_update_every: each run has the same "
                             "grid updates)")
    parser.add_argument("--warmup", type=count(1), default=20)
    add_params_arguments(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV path (default bench/results/launches_<device>.csv)")
    args = parser.parse_args()
    (device,) = devices([args.device])
    rows = []
    for choice in ("torch", "triton"):
        overrides = [*args.overrides, *(f"model.fast.{key}={choice}" for key in KERNEL_KEYS)]
        row = count_launches(args.params, overrides, device, args.steps, args.warmup)
        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    write_csv(args.out or REPO / "bench" / "results" / f"launches_{device.type}.csv", rows)


if __name__ == "__main__":
    run_stage(main)
