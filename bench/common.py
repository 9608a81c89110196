"""Shared by the bench scripts: data, model configs and devices (not a test)."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nerf.config import ModelConfig, Params, SplitConfig, TrainConfig, build, parse_yaml
from nerf.download import local_path
from nerf.errors import ConfigError, DataError
from nerf.io import atomic_file
from nerf.models import FastModel, Model, SeedModel, build_model
from nerf.scene import load_scene
from nerf.split import split_scene
from nerf.training import arithmetic
from nerf.views import Views

REPO = Path(__file__).resolve().parents[1]
KINDS = ("seed", "nerf", "fast")  # for --kinds' choices
DEVICES = ("cpu", "cuda", "mps")


def show_progress() -> bool:
    """Training bars on a terminal; none in a log (or the device tool's output), where each
    redraw would add a line."""
    return sys.stderr.isatty()


def count(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return value

    return parse


def load_split(source: str, split: SplitConfig) -> tuple[Views, Views]:
    """Train and test views of ``source`` ("sample" or a path), split as the pipeline does
    but without validation views: the benchmarks score the test views, and train on every
    other view as the targets they measure are defined (1 view in 8 held out, say)."""
    if "://" in source:
        raise ConfigError(f"data.source {source}: the benches read a local .npz or Blender folder, not a "
                          "URL; fetch it with the pipeline (dvc repro download) and give e.g. --set "
                          "data.source=data/raw/scene.npz")
    parts, _ = split_scene(load_scene(local_path(source)), dataclasses.replace(split, val_views=0))
    return parts["train"], parts["test"]


def without_budget(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``config`` with ``changes`` and no time budget, for the benches that count steps: one
    left in params.yaml (a failed ``dvc exp run -S train.time_budget=...`` leaves it there)
    would stop training before the steps they time, profile or digest."""
    return dataclasses.replace(config, time_budget=None, **changes)


def params_with(path: Path, kind: str, overrides: Sequence[str] = ()) -> Params:
    """``path``'s params with model.kind = ``kind`` and ``KEY=VALUE`` overrides (as
    ``dvc exp run -S``: dotted keys, YAML values), validated like params.yaml."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: file not found; expected the pipeline's params.yaml (--params)")
    values = parse_yaml(Path(path).read_text())
    for item in overrides:
        key, sep, text = item.partition("=")
        if key == "model.kind":
            raise ConfigError(f"--set {item}: the kinds are chosen by --kinds (or --kind)")
        *parents, leaf = key.split(".")
        node = values
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if not sep or not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"--set {item}: expected KEY=VALUE with KEY a key of {path}, "
                              "e.g. train.steps=2000")
        node[leaf] = parse_yaml(text)
    try:
        params = build(Params, values)
    except ConfigError as err:
        raise ConfigError(f"{path} with --set {' '.join(overrides)}: {err}") from None
    return dataclasses.replace(params, model=dataclasses.replace(params.model, kind=kind))


def precision(params: Params, device: torch.device, model: Model) -> str:
    """The arithmetic training uses: "bf16" (autocast), "tf32" (CUDA matmuls) or "fp32"."""
    return arithmetic(params.train.precision, device, model)


# fast's kernel choices (model.fast.<key>): the hash grid, the march, the volume rendering.
KERNEL_KEYS = ("hash_kernel", "march_kernel", "render_kernel")


def kernels(device: torch.device, model: Model, arithmetic: str) -> dict[str, str]:
    """The code a training step runs, in ``arithmetic``, for each of fast's KERNEL_KEYS and
    seed's mlp_kernel: "torch" or "triton"; "-" for the other kinds."""
    used = dict.fromkeys((*KERNEL_KEYS, "mlp_kernel"), "-")
    if isinstance(model, FastModel):
        fused = (model.field.grid.uses_triton(device), model.occupancy.uses_triton(device),
                 model.render_uses_triton(device))
        used |= {key: "triton" if f else "torch" for key, f in zip(KERNEL_KEYS, fused)}
    if isinstance(model, SeedModel):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=arithmetic == "bf16"):
            used["mlp_kernel"] = "triton" if model.field.uses_triton(device) else "torch"
    return used


def write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` (dicts with the same keys) as a CSV file with a header, atomically (a bench
    rewrites its CSV as it goes, and a kill mid-write must keep the last whole one)."""
    if not rows:
        raise DataError(f"{path}: nothing was measured, so nothing is written")
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override params, e.g. --set data.source=path/to/lego train.steps=5000")


def make_model(config: ModelConfig, params: Params, views: Views, device: torch.device, seed: int) -> Model:
    torch.manual_seed(seed)
    background = torch.from_numpy(views.background)
    return build_model(config, params.data.near, params.data.far, background).to(device)


def devices(requested: list[str]) -> list[torch.device]:
    """The requested devices this machine has (a missing one is skipped, with a line saying
    so); none of them is an error."""
    found, missing = [], []
    for name in requested:
        there = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(name)
        if there is not None and not there():
            print(f"bench: no {name} device here; skipping {name}")
            missing.append(name)
            continue
        found.append(torch.device(name))
    if not found:
        raise DataError(f"no {' or '.join(missing)} device on this machine; try cpu")
    return found


class SampleCounter:
    """Counts points evaluated by a model's fields (forward hooks; no library change)."""

    def __init__(self, model: Model) -> None:
        self.count = 0
        for field in model.fields():
            field.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.count += int(inputs[0].shape[0])
