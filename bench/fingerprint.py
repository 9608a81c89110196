"""Whether two machines train the same bits: a digest of the weights after a few CPU steps.

python -m bench.fingerprint [--steps 50] [--kind fast] [--set KEY=VALUE ...]

Trains params.yaml's ``--kind`` on the embedded sample split (the bench scripts' split: every
non-test view trains) on the CPU, on the full ``train.steps`` schedule but stopped after
``--steps`` steps, and prints one line: the processor, the kernel paths PyTorch and MKL take
(``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``), the mean loss of those steps and a SHA-256 of the
weights.
Run it on two machines (or with those two variables set differently): different digests
mean the two round differently, so ``dvc repro`` will not give them the same metrics bit for
bit; the same digest means the same arithmetic for those steps.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch

from bench.common import (
    KINDS,
    add_params_arguments,
    count,
    load_split,
    make_model,
    params_with,
    without_budget,
)
from nerf.errors import run_stage
from nerf.training import processor, train


def fingerprint(kind: str, steps: int, params_path: Path, overrides: list[str]) -> dict:
    params = params_with(params_path, kind, overrides)
    train_views, _ = load_split(params.data.source, params.split)
    device = torch.device("cpu")
    model = make_model(params.model, params, train_views, device, params.train.seed)
    config = without_budget(params.train, val_every=10**9, checkpoint_every=0, log_every=steps)
    summary = train(model, train_views, None, config, device, progress=False,
                    on_step=lambda step, seconds: step >= steps)
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return {"kind": kind, "steps": summary.steps, "mean_loss": repr(summary.loss),
            "weights_sha256": digest.hexdigest()[:16], "processor": processor(),
            "threads": torch.get_num_threads(), "aten": torch.backends.cpu.get_cpu_capability(),
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", "-"),
            "MKL_CBWR": os.environ.get("MKL_CBWR", "-"), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fingerprint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="fast", choices=KINDS)
    parser.add_argument("--steps", type=count(1), default=50, help="steps trained before the digest")
    add_params_arguments(parser)
    args = parser.parse_args()
    result = fingerprint(args.kind, args.steps, args.params, args.overrides)
    print(" ".join(f"{key}={value}" for key, value in result.items()))


if __name__ == "__main__":
    run_stage(main)
