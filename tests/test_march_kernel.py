"""The fused Triton march kernel against the PyTorch march: the same samples (ray indices and
depths, bit for bit), on a grid of known geometry and on random grids and rays, and it
compiles for an H100.

On a machine without CUDA the kernel runs in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, which conftest.py sets before the kernel is first imported); with CUDA it runs
compiled on the GPU. Skipped where the ``triton`` package is not installed.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from conftest import compile_for_h100
from test_occupancy import BOUND, camera_rays, sphere_density

from nerf.occupancy import OccupancyGrid, PackedSamples
from nerf.rays import Rays

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def both_paths(grid: OccupancyGrid, rays: Rays, near: float, far: float, randomized: bool
               ) -> tuple[PackedSamples, PackedSamples]:
    """The march with the PyTorch code, then with the kernel, from the same random stream."""
    results = []
    for kernel in ("torch", "triton"):
        grid.kernel = kernel
        assert grid.uses_triton(DEVICE) == (kernel == "triton")
        generator = torch.Generator(device=DEVICE).manual_seed(7)
        results.append(grid.march(rays, near, far, randomized, generator))
    return results[0], results[1]


def assert_same(a: PackedSamples, b: PackedSamples) -> None:
    assert a.ray_indices.numel() > 0
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("randomized", [False, True])
def test_the_kernel_keeps_the_samples_of_the_pytorch_march_on_a_sphere(randomized: bool) -> None:
    grid = OccupancyGrid(resolution=16, bound=BOUND, threshold=0.01, steps_per_diagonal=64)
    grid.update(sphere_density, generator=torch.Generator().manual_seed(0))
    grid = grid.to(DEVICE)
    rays = Rays(*(x.to(DEVICE) for x in camera_rays()))
    torch_samples, kernel_samples = both_paths(grid, rays, 1.0, 10.0, randomized)
    assert_same(torch_samples, kernel_samples)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_kernel_keeps_the_samples_of_the_pytorch_march_on_random_grids(seed: int) -> None:
    # Random occupancy, rays from inside and outside the cube in every direction, unnormalised
    # directions, a step count (a diagonal of 300 steps) that is no multiple of the kernel's block.
    gen = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(resolution=24, bound=1.5, threshold=0.01, steps_per_diagonal=300)
    grid.occupied.copy_(torch.rand(grid.occupied.shape, generator=gen) < 0.3)
    grid = grid.to(DEVICE)
    origins = (torch.rand(400, 3, generator=gen) * 2 - 1) * 2.0
    directions = torch.randn(400, 3, generator=gen) * (0.5 + torch.rand(400, 1, generator=gen))
    rays = Rays(origins.to(DEVICE), directions.to(DEVICE))
    torch_samples, kernel_samples = both_paths(grid, rays, 0.5, 6.0, randomized=True)
    assert_same(torch_samples, kernel_samples)
    assert torch_samples.ray_indices.numel() > 3_000  # a real workload, not a few stray samples


def test_no_rays_give_no_samples() -> None:
    grid = OccupancyGrid(resolution=8, bound=BOUND, threshold=0.01, steps_per_diagonal=64).to(DEVICE)
    empty = Rays(torch.zeros(0, 3, device=DEVICE), torch.zeros(0, 3, device=DEVICE))
    grid.kernel = "triton"
    samples = grid.march(empty, 1.0, 10.0, randomized=False)
    assert all(x.shape == (0,) for x in samples)


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nerf.march_kernel import _BLOCK, _keep
signature = dict.fromkeys(["origins", "directions", "t0", "dt", "t1", "offset"], "*fp32")
signature |= {"occupied": "*i8", "keep": "*i8", "n_steps": "i32", "bound": "fp32", "scale": "fp32",
              "res": "i32", "BLOCK": "constexpr"}
source = ASTSource(_keep, signature, {"BLOCK": _BLOCK})
kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
ptx = kernel.asm["ptx"]
print(len(kernel.asm["cubin"]) > 0, "fma.rn.f32" in ptx, "mul.rn.f32" in ptx or "mul.f32" in ptx)
"""


def test_the_kernel_compiles_to_machine_code_for_an_h100_without_fused_multiply_adds(tmp_path) -> None:
    # The interpreter runs the kernel's Python; this compiles it as a GPU run would, down to
    # sm_90 machine code with Triton's own ptxas (no GPU needed). Fused multiply-adds would
    # round differently from the PyTorch march's separate multiplies and adds.
    assert compile_for_h100(COMPILE_FOR_H100, tmp_path) == ["True", "False", "True"]
