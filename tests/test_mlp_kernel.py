"""The seed field's fused Triton kernels (nerf.mlp_kernel) against PyTorch: outputs and every
parameter's gradient, for MLPs with and without a skip layer, batches that do not fill the
last block of samples, and inference's two activation slots; the field's choice of code;
and they compile for an H100.

On a machine without CUDA the kernels run in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, which conftest.py sets before the kernels are first imported); with CUDA they
run compiled on the GPU. Skipped where the ``triton`` package is not installed.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import Tensor

pytest.importorskip("triton")

from conftest import compile_for_h100

from nerf.config import ConfigError, SeedModelConfig
from nerf.encoding import fourier_encode
from nerf.fields import SeedField
from nerf.mlp_kernel import BLOCK_ROWS, seed_mlp

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _bf16(x: Tensor) -> Tensor:
    """x's values rounded to bf16, its gradient passed through unrounded."""
    return x + (x.to(torch.bfloat16).to(x.dtype) - x).detach()


def reference(field: SeedField, inputs: Tensor) -> Tensor:
    """``field.head(field.mlp(features))`` in float64 with the kernels' roundings: features,
    weights and activations to bf16 forward, the gradient each ReLU passes back to bf16;
    everything else (sums, the head, weight gradients) exact. (n, 4)."""
    x = fourier_encode(inputs.float(), field.frequencies, torch.pi).to(torch.bfloat16).double()
    h = x
    for i, layer in enumerate(field.mlp.layers):
        if i == field.mlp.skip and i > 0:
            h = torch.cat([h, x], dim=-1)
        z = h @ _bf16(layer.weight.double()).t() + layer.bias.double()
        if z.requires_grad:
            z.register_hook(lambda g: g.to(torch.bfloat16).double())
        h = _bf16(torch.relu(z))
    return h @ field.head.weight.double().t() + field.head.bias.double()


def outputs_and_grads(field: SeedField, inputs: Tensor, upstream: Tensor, fused: bool) -> list[Tensor]:
    field.zero_grad()
    if fused:
        out = seed_mlp(inputs, field.frequencies, torch.pi, list(field.mlp.layers), field.mlp.skip,
                       field.head)
    else:
        out = reference(field, inputs)
    (out * upstream).sum().backward()
    return [out.detach().double()] + [p.grad.double() for p in field.parameters()]


@pytest.mark.parametrize("n, frequencies, width, depth, skip", [
    (300, 10, 64, 8, 5),  # the seed's shape, narrower
    (BLOCK_ROWS + 1, 4, 32, 3, 1),  # a second block with one sample; skip into the first hidden layer
    (77, 0, 16, 2, 0),  # no skip, raw inputs only (6 features)
    (40, 2, 16, 1, 1),  # one layer: no hidden product, the skip index past the last layer
    (150, 10, 256, 3, 2),  # the seed's width: two column blocks per layer
])
def test_the_kernels_match_pytorch_with_their_roundings_in_value_and_gradient(n, frequencies, width, depth,
                                                                              skip) -> None:
    torch.manual_seed(0)
    field = SeedField(frequencies, width, depth, skip, mlp_kernel="triton").to(DEVICE)
    inputs = (torch.rand(n, 6) * 2 - 1).to(DEVICE)
    upstream = torch.randn(n, 4).to(DEVICE)
    got = outputs_and_grads(field, inputs, upstream, fused=True)
    want = outputs_and_grads(field, inputs, upstream, fused=False)
    # Sums in another order round a few activations to the neighbouring bf16 value (2^-8
    # apart, relative): the outputs agree to 2e-3 of their largest.
    torch.testing.assert_close(got[0], want[0], rtol=0.0, atol=2e-3 * float(want[0].abs().max()))
    # The weight gradients come out of bf16 products (2^-9 relative; 0.2-0.4% of the largest
    # measured), and a pre-activation that one route rounds to the other side of zero moves a
    # sum over samples by one sample's gradient (one in 150,000 at the seed's shape moved a
    # bias gradient by 3.5% of its largest, 1.4% in norm). A wrong layer, mask or transpose is
    # off by the gradient's own size.
    for (name, _), g, w in zip(field.named_parameters(), got[1:], want[1:]):
        assert float(w.abs().max()) > 0, name
        assert float((g - w).norm()) <= 2e-2 * float(w.norm()), name
        assert float((g - w).abs().max()) <= 5e-2 * float(w.abs().max()), name


def allocations(fn) -> list[int]:
    """Bytes of each tensor ``fn()`` allocates with torch.empty on DEVICE."""
    with torch.profiler.profile(profile_memory=True) as prof:
        fn()
    cuda = DEVICE.type == "cuda"
    return [e.self_device_memory_usage if cuda else e.self_cpu_memory_usage for e in prof.events()
            if e.name == "aten::empty"]


def test_inference_keeps_two_layers_activations_and_gives_the_same_outputs() -> None:
    torch.manual_seed(1)
    n, width, depth = 200, 32, 5
    field = SeedField(6, width, depth, 3, mlp_kernel="triton").to(DEVICE)
    inputs = (torch.rand(n, 6) * 2 - 1).to(DEVICE)
    args = (inputs, field.frequencies, torch.pi, list(field.mlp.layers), field.mlp.skip, field.head)
    two, all_layers = 2 * n * width * 2, depth * n * width * 2  # bf16 activations
    with torch.no_grad():
        inferred = seed_mlp(*args)
        sizes = allocations(lambda: seed_mlp(*args))
        assert two in sizes and all_layers not in sizes
    trained = seed_mlp(*args)
    sizes = allocations(lambda: seed_mlp(*args))
    assert all_layers in sizes and two not in sizes
    assert trained.requires_grad and not inferred.requires_grad
    assert torch.equal(inferred, trained.detach())


def test_the_field_runs_the_kernels_where_chosen() -> None:
    cpu = torch.device("cpu")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # as conftest.py sets it without CUDA
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert SeedField(mlp_kernel="triton").uses_triton(cpu) == interpreted
        assert not SeedField(mlp_kernel="auto").uses_triton(cpu)  # auto: CUDA only
        assert not SeedField(mlp_kernel="torch").uses_triton(cpu)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert not SeedField(mlp_kernel="auto").uses_triton(cuda)  # float32: PyTorch
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert SeedField(mlp_kernel="auto").uses_triton(cuda)
            assert not SeedField(width=100, mlp_kernel="auto").uses_triton(cuda)  # not a power of two
        with torch.autocast("cuda", dtype=torch.float16):  # the kernels are bf16: PyTorch
            assert not SeedField(mlp_kernel="auto").uses_triton(cuda)
    with pytest.raises(ConfigError, match="model.seed.mlp_kernel is triton.*model.seed.width.*got 100"):
        SeedModelConfig(width=100, mlp_kernel="triton")


def test_the_field_gives_alike_colours_and_densities_with_either_code() -> None:
    torch.manual_seed(2)
    field = SeedField(10, 64, 4, 2, mlp_kernel="torch").to(DEVICE)
    points = (torch.rand(500, 3) * 2 - 1).to(DEVICE)
    directions = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1).to(DEVICE)
    results = []
    for kernel in ("torch", "triton"):
        field.mlp_kernel = kernel
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            results.append(field(points, directions))
    (rgb_torch, sigma_torch), (rgb_fused, sigma_fused) = results
    assert rgb_fused.dtype == sigma_fused.dtype == torch.float32
    # Both in bf16 arithmetic, rounded at different points (the head: bf16 against float32).
    torch.testing.assert_close(rgb_fused, rgb_torch.float(), rtol=0.0, atol=2e-2)
    torch.testing.assert_close(sigma_fused, sigma_torch.float(), rtol=0.0,
                               atol=2e-2 * float(sigma_torch.max()))
    assert float(sigma_torch.max()) > 0.1


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nerf import mlp_kernel as mk
seed = dict(IN_DIM=6, FREQUENCIES=10, IN=128, WIDTH=256, DEPTH=8, SKIP=5)
kernels = {
    mk._forward: ({"inputs": "*fp32", "n": "i32", "scale": "fp32", "hidden_t": "*bf16", "in_t": "*bf16",
                   "biases": "*fp32", "head": "*fp32", "head_bias": "*fp32", "encoded": "*bf16",
                   "acts": "*bf16", "out": "*fp32"}, seed | {"SAVE": True}),
    mk._backward: ({"grad_out": "*fp32", "n": "i32", "hidden_t": "*bf16", "head": "*fp32", "acts": "*bf16",
                    "grads": "*bf16", "bias_grads": "*fp32"}, {"WIDTH": 256, "DEPTH": 8}),
}
for fn, (signature, constants) in kernels.items():
    blocks = mk._blocks(256, 128)
    warps = blocks.pop("num_warps")
    constants = constants | blocks
    # As a launch specializes them: pointers and the sample count (800,000) divisible by 16.
    attrs = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(signature.values()) if kind != "fp32"}
    source = ASTSource(fn, signature | dict.fromkeys(constants, "constexpr"), constants, attrs)
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    ptx = kernel.asm["ptx"]
    print(len(kernel.asm["cubin"]) > 0, "wgmma.mma_async" in ptx, "cp.async" in ptx, "sin.approx" in ptx)
"""


def test_the_kernels_compile_for_an_h100_with_tensor_core_products_and_pipelined_loads(tmp_path) -> None:
    # The interpreter runs the kernels' Python; this compiles them as a GPU run would, down to
    # sm_90 machine code with Triton's own ptxas (no GPU needed): the layers' products on the
    # tensor cores (wgmma), their operands copied ahead asynchronously (cp.async), and the
    # Fourier features' sines from libdevice (not the approximate sin.approx, whose error
    # grows with the angle: up to 2^9 pi here).
    assert compile_for_h100(COMPILE_FOR_H100, tmp_path) == ["True", "True", "True", "False"] * 2
