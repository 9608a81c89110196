"""The fused Triton volume-rendering kernels against the PyTorch path (weights_packed then
composite_packed): colours, opacities, depths and the gradients of all three, on rays with
no sample, one sample and more samples than a kernel block; and they compile for an H100.

On a machine without CUDA the kernels run in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, which conftest.py sets before the kernels are first imported); with CUDA they
run compiled on the GPU. Skipped where the ``triton`` package is not installed.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from conftest import compile_for_h100

from nerf.config import FastModelConfig
from nerf.models import FastModel
from nerf.rays import Rays
from nerf.render_kernel import _BLOCK, render_packed
from nerf.rendering import composite_packed, weights_packed

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def packed_batch(seed: int, dtype: torch.dtype = torch.float32):
    """Rays with 0, 1, a few and more than two blocks of samples; densities from empty to
    opaque; random colours, interval lengths, depths and background."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 3 * _BLOCK, (40,), generator=gen)
    counts[:4] = torch.tensor([0, 1, _BLOCK, 2 * _BLOCK + 1])
    ray_indices = torch.repeat_interleave(torch.arange(40), counts)
    n = ray_indices.numel()
    sigmas = torch.rand(n, generator=gen) ** 3 * 100  # mostly thin, some dense
    rgbs = torch.rand(n, 3, generator=gen)
    deltas = torch.rand(n, generator=gen) * 0.02
    t_mid = torch.rand(n, generator=gen) * 4
    background = torch.rand(3, generator=gen)
    upstream = [torch.randn(40, 3, generator=gen), torch.randn(40, generator=gen),
                torch.randn(40, generator=gen)]
    tensors = [sigmas, rgbs, deltas, t_mid, background, *upstream]
    return ray_indices.to(DEVICE), [x.to(DEVICE, dtype) for x in tensors]


def render_and_grads(fused: bool, ray_indices, sigmas, rgbs, deltas, t_mid, background, *upstream):
    sigmas, rgbs = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    if fused:
        out = render_packed(sigmas, rgbs, deltas, t_mid, ray_indices, len(upstream[1]), background)
    else:
        weights = weights_packed(sigmas, deltas, ray_indices)
        out = composite_packed(weights, rgbs, t_mid, ray_indices, len(upstream[1]), background)
    loss = (out.rgb * upstream[0]).sum() + (out.opacity * upstream[1]).sum() + (out.depth * upstream[2]).sum()
    loss.backward()
    return [out.rgb, out.opacity, out.depth, sigmas.grad, rgbs.grad]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_kernels_match_the_pytorch_path_in_value_and_gradient(seed: int) -> None:
    ray_indices, tensors = packed_batch(seed)
    fused = render_and_grads(True, ray_indices, *tensors)
    # The reference in float64: the kernels accumulate in float32 per ray.
    _, tensors64 = packed_batch(seed, torch.float64)
    reference = render_and_grads(False, ray_indices, *tensors64)
    for name, got, want in zip(["rgb", "opacity", "depth", "d sigma", "d rgb"], fused, reference):
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), name
        error = float((got.detach().double() - want.detach()).norm() / want.detach().norm())
        assert error < 1e-5, (name, error)
    # Rays without samples show the background, with nothing in front of it.
    assert torch.equal(fused[0][0], tensors[4]) and fused[1][0] == 0 and fused[2][0] == 0


def test_a_ray_behind_an_opaque_sample_passes_no_gradient_to_its_later_samples() -> None:
    # One ray: an opaque sample, then two more. Their weights are ~0, and so are their gradients.
    ray_indices = torch.zeros(3, dtype=torch.int64, device=DEVICE)
    sigmas = torch.tensor([1e4, 5.0, 5.0], device=DEVICE)
    rgbs, deltas = torch.rand(3, 3, device=DEVICE), torch.full((3,), 0.01, device=DEVICE)
    upstream = [torch.ones(1, 3, device=DEVICE), torch.ones(1, device=DEVICE), torch.zeros(1, device=DEVICE)]
    rgb, opacity, _, d_sigma, d_rgb = render_and_grads(
        True, ray_indices, sigmas, rgbs, deltas, torch.arange(3.0, device=DEVICE),
        torch.zeros(3, device=DEVICE),
        *upstream,
    )
    assert torch.allclose(rgb[0], rgbs[0]) and float(opacity[0].detach()) == pytest.approx(1.0)
    assert torch.all(d_sigma[1:].abs() < 1e-12) and torch.all(d_rgb[1:].abs() < 1e-12)


@pytest.mark.parametrize("dense", [1e5, 1e8, 1e17, float("inf")])
def test_a_diverging_density_renders_as_in_the_pytorch_path(dense: float) -> None:
    # Ray 0: 50 thin samples, one of a huge (or infinite) density, then one more; ray 1 after it.
    # The optical depth before the dense sample must survive it (opacity at most 1), an
    # infinite one must not make NaN (inf - inf), and both rays must render as the PyTorch
    # path renders them (which keeps ray 1 as it is alone: test_rendering).
    sigmas = torch.tensor([1e-3] * 50 + [dense, 1.0] + [10.0, 10.0, 10.0], device=DEVICE)
    ray_indices = torch.tensor([0] * 52 + [1] * 3, device=DEVICE)
    gen = torch.Generator().manual_seed(0)
    rgbs, t_mid = torch.rand(55, 3, generator=gen).to(DEVICE), torch.arange(55.0, device=DEVICE)
    deltas = torch.cat([torch.ones(52), torch.full((3,), 0.1)]).to(DEVICE)
    upstream = [torch.randn(2, 3, generator=gen).to(DEVICE), torch.randn(2, generator=gen).to(DEVICE),
                torch.randn(2, generator=gen).to(DEVICE)]
    args = (ray_indices, sigmas, rgbs, deltas, t_mid, torch.full((3,), 0.5, device=DEVICE), *upstream)
    fused, reference = render_and_grads(True, *args), render_and_grads(False, *args)
    for name, got, want in zip(["rgb", "opacity", "depth", "d sigma", "d rgb"], fused, reference):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    opacity = float(fused[1][0].detach())
    assert opacity <= 1.0 + 1e-6 and opacity == pytest.approx(1.0)


def test_fast_model_renders_alike_with_either_path() -> None:
    config = FastModelConfig(levels=4, log2_table_size=10, max_resolution=64, grid_resolution=8,
                             steps_per_diagonal=128)
    torch.manual_seed(0)
    model = FastModel(config, 2.0, 6.0, torch.ones(3)).to(DEVICE)
    with torch.no_grad():
        model.field.grid.table.normal_(0, 1)
    gen = torch.Generator().manual_seed(1)
    rays = Rays(torch.tensor([0.0, 0.0, 4.0]).expand(64, 3).to(DEVICE),
                (torch.cat([torch.rand(64, 2, generator=gen) - 0.5, -torch.ones(64, 1)], dim=-1)).to(DEVICE))
    outputs = []
    for kernel in ("torch", "triton"):
        model.config = FastModelConfig(**{**config.__dict__, "render_kernel": kernel})
        assert model.render_uses_triton(DEVICE) == (kernel == "triton")
        with torch.no_grad():
            outputs.append(model.render_rays(rays, randomized=False))
    for got, want in zip(outputs[1][:3], outputs[0][:3]):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert 0.05 < float(outputs[0].opacity.mean()) < 0.95  # a scene that is neither empty nor solid


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nerf.render_kernel import _BLOCK, _backward, _forward
floats = ["sigmas", "deltas", "rgbs", "ts"]
common = dict.fromkeys(floats, "*fp32") | {"bounds": "*i64", "background": "*fp32"}
outputs = {"forward": ["out_rgb", "out_opacity", "out_depth"],
           "backward": ["out_rgb", "out_opacity", "out_depth", "grad_rgb", "grad_opacity", "grad_depth",
                        "grad_sigmas", "grad_rgbs"]}
for name, fn in (("forward", _forward), ("backward", _backward)):
    signature = common | dict.fromkeys(outputs[name], "*fp32") | {"BLOCK": "constexpr"}
    kernel = triton.compile(ASTSource(fn, signature, {"BLOCK": _BLOCK}), target=GPUTarget("cuda", 90, 32),
                            options={"enable_fp_fusion": False})
    print(len(kernel.asm["cubin"]) > 0, "fma.rn.f32" in kernel.asm["ptx"])
"""


def test_the_kernels_compile_to_machine_code_for_an_h100_without_fused_multiply_adds(tmp_path) -> None:
    # The interpreter runs the kernels' Python; this compiles them as a GPU run would, down to
    # sm_90 machine code with Triton's own ptxas (no GPU needed). A fused multiply-add would
    # subtract an unrounded sigma * delta from the rounded running sum (see nerf.render_kernel).
    assert compile_for_h100(COMPILE_FOR_H100, tmp_path) == ["True", "False", "True", "False"]
