"""The same models on an accelerator as on the CPU: renders agree, training learns.

Skipped where there is no CUDA device (as on CI). NERF_TEST_DEVICE=cpu runs them against a
second CPU copy, which checks the tests themselves on any machine.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import REPO

from nerf.config import FastModelConfig, ModelConfig, SeedModelConfig, TrainConfig
from nerf.models import Model, build_model
from nerf.rays import image_rays
from nerf.scene import load_scene
from nerf.training import arithmetic, evaluate_views, train
from nerf.views import Views

DEVICE = torch.device(os.environ.get("NERF_TEST_DEVICE", "cuda"))
CPU = torch.device("cpu")
NEAR, FAR = 2.0, 6.0

pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device"
)

# The seed kind shrunk to a few milliseconds a step; nerf and fast as in params.yaml.
SMALL_SEED = SeedModelConfig(frequencies=6, width=64, depth=4, skip=2, samples=32, lr=1e-3, lr_final=1e-3)


def model_on(kind: str, device: torch.device, kernels: str = "auto"):
    """``kernels``: the choice for fast's hash grid, march and volume rendering alike, and for
    seed's MLP."""
    torch.manual_seed(0)
    fast = FastModelConfig(hash_kernel=kernels, march_kernel=kernels, render_kernel=kernels)
    seed = dataclasses.replace(SMALL_SEED, mlp_kernel=kernels)
    config = ModelConfig(kind=kind, seed=seed, fast=fast)
    return build_model(config, NEAR, FAR, torch.zeros(3)).to(device)


def needs_the_triton_kernels(kernels: str) -> None:
    if kernels == "triton":
        pytest.importorskip("triton")
        if DEVICE.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("the kernels run on CUDA; tests/test_*_kernel.py check them in Triton's interpreter")


@pytest.fixture(scope="module")
def crops() -> Views:
    """Central 40x40 crops of the embedded sample's 80 views."""
    scene = load_scene(REPO / "assets" / "tiny_lego.npz")
    crops = scene.images[:, 30:70, 30:70]
    return Views(crops, scene.poses, scene.focal, scene.names, np.zeros(3, np.float32))


@pytest.mark.parametrize("kind, kernels", [("seed", "auto"), ("nerf", "auto"), ("fast", "torch"),
                                            ("fast", "triton")])
def test_a_model_renders_the_same_rays_on_the_device_as_on_the_cpu(kind, kernels, crops) -> None:
    # fast with the triton kernels: the fused hash grid, march and rendering on the device
    # against the PyTorch code on the CPU.
    needs_the_triton_kernels(kernels)
    reference = model_on(kind, CPU, kernels)
    if kind == "fast":  # occupied cells only inside a ball: the skipping must agree too
        grid = reference.occupancy
        axis = (torch.arange(grid.resolution) + 0.5) * grid.cell_size - grid.bound
        x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
        grid.occupied.copy_(x**2 + y**2 + z**2 < 0.8**2)
    moved = copy.deepcopy(reference).to(DEVICE)
    pose = torch.from_numpy(crops.poses[3])
    rays = image_rays(pose, 40, 40, crops.focal)
    with torch.no_grad():
        want = reference.render_rays(rays, randomized=False)
        got = moved.render_rays(rays.to(DEVICE), randomized=False)
    for name in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(getattr(got, name).cpu(), getattr(want, name), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["seed", "fast"])
def test_training_on_the_device_learns_with_the_default_precision(kind, crops) -> None:
    train_views = crops.subset(range(0, 64, 4))
    seen = train_views.subset([0, 5])
    model = model_on(kind, DEVICE)
    before = evaluate_views(model, seen, 4096, DEVICE)
    config = TrainConfig(steps=150, val_every=10**9, device=DEVICE.type, seed=0)
    matmuls: set[str] = set()  # the float32 matmul precision whenever a field ran in training
    for field in model.fields():
        field.register_forward_hook(lambda *_: matmuls.add(torch.get_float32_matmul_precision()))
    summary = train(model, train_views, None, config, DEVICE, progress=False)
    in_training = set(matmuls)  # evaluation renders below run in plain float32
    after = evaluate_views(model, seen, 4096, DEVICE)
    cuda = DEVICE.type == "cuda"
    expected = {"seed": "bf16" if cuda else "fp32", "fast": "tf32" if cuda else "fp32"}[kind]
    assert arithmetic(config.precision, DEVICE, model) == expected
    assert in_training == {"high" if expected == "tf32" else "highest"}
    assert torch.get_float32_matmul_precision() == "highest"  # restored after training
    assert np.isfinite(summary.loss) and after > before + 3.0, (before, after)
    assert all(p.device.type == DEVICE.type for p in model.parameters())


def test_compiled_bf16_training_on_the_device_matches_eager_loosely(crops) -> None:
    train_views = crops.subset(range(0, 64, 8))
    losses = []
    for compiled in (False, True):
        model = model_on("fast", DEVICE)
        config = TrainConfig(steps=20, log_every=20, val_every=10**9, device=DEVICE.type,
                             seed=0, precision="bf16", compile=compiled)
        losses.append(train(model, train_views, None, config, DEVICE, progress=False).loss)
    assert np.isfinite(losses[1]) and losses[1] == pytest.approx(losses[0], rel=0.05)


def train_with_each_code(
    kind: str, train_views: Views, steps: int, precision: str
) -> tuple[list[float], Model]:
    """The final losses of ``kind`` trained with the PyTorch code and with the Triton kernels,
    from the same initial weights and seed; and the model the kernels trained."""
    losses = []
    for kernels in ("torch", "triton"):
        model = model_on(kind, DEVICE, kernels)
        config = TrainConfig(steps=steps, log_every=steps, val_every=10**9, device=DEVICE.type, seed=0,
                             precision=precision)
        losses.append(train(model, train_views, None, config, DEVICE, progress=False).loss)
    return losses, model


def test_the_triton_kernels_train_like_the_pytorch_code(crops) -> None:
    needs_the_triton_kernels("triton")
    losses, model = train_with_each_code("fast", crops.subset(range(0, 64, 8)), 20, "fp32")
    # Same steps; atomic adds sum in another order, so the runs drift apart only slightly.
    assert np.isfinite(losses[1]) and losses[1] == pytest.approx(losses[0], rel=0.05)
    untrained = model_on("fast", DEVICE).field.grid.table
    assert not torch.equal(model.field.grid.table.detach(), untrained)  # the Triton run's table learned


def test_the_seed_mlp_kernels_train_like_the_pytorch_code(crops) -> None:
    needs_the_triton_kernels("triton")
    # The central 20x20 of every 8th crop: seed trains on whole images, and a CPU check of
    # this test (NERF_TEST_DEVICE=cpu) runs the kernels in Triton's interpreter.
    views = crops.subset(range(0, 64, 8))
    train_views = Views(views.images[:, 10:30, 10:30], views.poses, views.focal, views.names,
                        views.background)
    losses, _ = train_with_each_code("seed", train_views, 10, "bf16")
    # Both bf16; the kernels round the head and the features' sums at other points.
    assert np.isfinite(losses[1]) and losses[1] == pytest.approx(losses[0], rel=0.05)
