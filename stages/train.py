"""Train stage: fit the configured model kind to the training views.

python -m stages.train --split data/split --out models --live metrics/train --checkpoints checkpoints

Writes ``<out>/model.pt`` (weights and the config that built them) and the DVCLive logs
in ``<live>``, with the machine that trained in its ``params.yaml`` (``run.machine``: its
seconds compare only with another run's on the same machine); both appear only when
training finishes. Every ``train.checkpoint_every`` steps the whole training state goes to
``<checkpoints>/last.pt`` (kept between runs): a killed run started again with the same
inputs resumes from it, with the same result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from dvclive import Live

from nerf import resume
from nerf.config import load_params, to_dict
from nerf.errors import run_stage
from nerf.io import atomic_dir
from nerf.models import build_model
from nerf.training import machine, pick_device, save_checkpoint, train
from nerf.views import load_views

MODEL_FILE = "model.pt"
LIVE_FILES = ("metrics.json", "params.yaml", "plots")  # what DVCLive writes into --live, as configured below


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True, help="split folder (train.npz, val.npz)")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive log folder to write")
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder of the resumable checkpoint")
    args = parser.parse_args()

    params = load_params("params.yaml")
    inputs = [args.split / "train.npz", args.split / "val.npz"]
    train_views, val_views = (load_views(path) for path in inputs)
    device = pick_device(params.train.device)
    torch.manual_seed(params.train.seed)
    model = build_model(
        params.model, params.data.near, params.data.far, torch.from_numpy(train_views.background)
    ).to(device)
    print(f"train: {params.model.kind} on {device} ({machine(device)}), {train_views.n_views} views of "
          f"{train_views.width}x{train_views.height} ({val_views.n_views} for validation), "
          f"{params.train.steps} steps"
          + (f" or {params.train.time_budget:g} s" if params.train.time_budget else ""))

    # What a checkpoint must share with this run to be resumed: the params this stage reads
    # (how often checkpoints are written does not change the result), inputs, code (this
    # script's too).
    shaping = {
        "data": {"near": params.data.near, "far": params.data.far},
        "model": to_dict(params.model),
        "train": {k: v for k, v in to_dict(params.train).items() if k != "checkpoint_every"},
    }
    fingerprint = resume.fingerprint(shaping, inputs, device, script=Path(__file__))
    checkpoint = args.checkpoints / resume.CHECKPOINT
    with resume.exclusive(args.checkpoints):  # one training at a time on this checkpoint
        start = resume.load(checkpoint, fingerprint, params.train.steps, params.train.time_budget)
        print(f"train: {start.message}")
        with (atomic_dir(args.live, holds=LIVE_FILES) as live_dir,
              atomic_dir(args.out, holds=(MODEL_FILE,)) as out_dir):
            resume.restore_files(start.logs, live_dir)
            with Live(str(live_dir), resume=start.state is not None, save_dvc_exp=False, dvcyaml=None,
                      report=None) as live:
                # What the seconds were measured on (a resumed run: the machine that finished it).
                live.log_params({"run": {"machine": machine(device), "torch": str(torch.__version__)}})

                def save(state: dict) -> None:
                    resume.save(checkpoint, state, fingerprint, resume.snapshot_files(live_dir))

                # Validation renders in the device's default passes, not render.chunk's: that key
                # tunes the render stage's speed, and must not make DVC retrain the model.
                summary = train(model, train_views, val_views, params.train, device, live,
                                resume=start.state, on_checkpoint=save)
                live.log_metric("train/steps_per_second", summary.steps / summary.seconds, plot=False)
            # Training seconds stay out of the model (they are in metrics/train): the same training
            # then writes the same bytes, and DVC sees an unchanged model.
            record = {k: v for k, v in summary._asdict().items() if k != "seconds"}
            save_checkpoint(out_dir / MODEL_FILE, model, params.model, {"train_summary": record})
    val_text = f", validation PSNR {summary.val_psnr:.2f} dB" if summary.val_psnr is not None else ""
    print(f"train: {summary.steps} steps in {summary.seconds:.1f} s "
          f"({summary.steps / summary.seconds:.2f} steps/s), "
          f"train PSNR {summary.train_psnr:.2f} dB{val_text}")


if __name__ == "__main__":
    run_stage(main)
