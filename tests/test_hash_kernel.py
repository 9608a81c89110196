"""The fused Triton hash-grid kernels against the direct per-point reference and the PyTorch
path: features, table gradients, every level kind and feature width, the edges.

On a machine without CUDA the kernels run in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, which conftest.py sets before the kernels are first imported); with CUDA they
run compiled on the GPU. Skipped where the ``triton`` package is not installed.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from conftest import compile_for_h100
from test_encoding import BOUND, make_grid, reference_encoding, sample_points

from nerf.encoding import HashGrid

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def both_paths(grid: HashGrid, points: torch.Tensor, upstream: torch.Tensor | None = None):
    """(features, table gradient of sum(features * upstream)) with the PyTorch path, then
    with the kernels."""
    results = []
    for kernel in ("torch", "triton"):
        grid.kernel, grid.table.grad = kernel, None
        features = grid(points)
        weights = torch.ones_like(features) if upstream is None else upstream
        (features * weights).sum().backward()
        results.append((features.detach(), grid.table.grad.clone()))
    return results


def test_the_kernels_match_the_direct_per_point_reference() -> None:
    grid = make_grid().to(DEVICE)  # two dense levels and two hashed ones, order-1 table values
    points = sample_points()  # interior points, both corners of the cube, outside, on vertices
    expected, expected_grad = reference_encoding(grid.table.cpu(), points)
    grid.kernel = "triton"
    features = grid(points.to(DEVICE))
    features.sum().backward()
    assert features.shape == (points.shape[0], 8) and features.dtype == torch.float32
    assert torch.allclose(features.cpu().double(), expected, atol=2e-5)
    assert torch.allclose(grid.table.grad.cpu().double(), expected_grad, atol=1e-5)


@pytest.mark.parametrize("features_per_level", [1, 2, 3])
def test_the_kernels_match_the_pytorch_path_for_any_feature_width(features_per_level: int) -> None:
    # 5 levels from 4 to 64 cells on a 2^10 table: levels 0-1 dense, 2-4 hashed. 3 features
    # per level is not a power of two: the kernels pad their feature axis and mask it.
    torch.manual_seed(features_per_level)
    grid = HashGrid(levels=5, features_per_level=features_per_level, log2_table_size=10,
                    base_resolution=4, max_resolution=64, bound=BOUND).to(DEVICE)
    with torch.no_grad():
        grid.table.normal_()
    assert grid.n_dense == 2
    points = ((torch.rand(300, 3) * 2 - 1) * 1.2 * BOUND).to(DEVICE)  # some outside the cube
    upstream = torch.randn(300, grid.out_dim, device=DEVICE)
    (want, want_grad), (got, got_grad) = both_paths(grid, points, upstream)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Many points share the coarse rows: sums of ~100 terms in another order.
    torch.testing.assert_close(got_grad, want_grad, atol=1e-4, rtol=1e-5)
    assert int((got_grad != 0).any(dim=1).sum()) > 0


def test_no_points_give_no_features_and_a_zero_gradient() -> None:
    grid = make_grid().to(DEVICE)
    grid.kernel = "triton"
    features = grid(torch.empty(0, 3, device=DEVICE))
    features.sum().backward()
    assert features.shape == (0, 8)
    assert torch.count_nonzero(grid.table.grad) == 0


def test_points_that_need_a_gradient_keep_the_pytorch_path() -> None:
    # The kernels differentiate only the table; a caller asking for d features / d points
    # gets the PyTorch path, whose gradient reaches the points.
    grid = make_grid().to(DEVICE)
    grid.kernel = "triton"
    points = sample_points()[:12].to(DEVICE).requires_grad_()
    grid(points).sum().backward()
    assert points.grad is not None and torch.count_nonzero(points.grad) > 0


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nerf.hash_kernel import _encode
pointers = (dict.fromkeys(["points", "table", "features"], "*fp32")
            | dict.fromkeys(["resolutions", "offsets"], "*i32"))
signature = pointers | {"n": "i32", "bound": "fp32", "n_dense": "i32", "hash_mask": "i32"}
signature |= dict.fromkeys(["BACKWARD", "LEVELS", "F", "FP", "BLOCK"], "constexpr")
for backward in (False, True):
    for width, padded in ((2, 2), (3, 4)):
        constants = {"BACKWARD": backward, "LEVELS": 16, "F": width, "FP": padded, "BLOCK": 128}
        kernel = triton.compile(ASTSource(_encode, signature, constants), target=GPUTarget("cuda", 90, 32))
        print(len(kernel.asm["cubin"]) > 0, "atom.global" in kernel.asm["ptx"])
"""


def test_the_kernels_compile_to_machine_code_for_an_h100(tmp_path) -> None:
    # The interpreter runs the kernels' Python; this compiles them as a GPU run would, down to
    # sm_90 machine code with Triton's own ptxas (no GPU needed), both directions, a power-of-two
    # and a padded feature width. Atomic adds appear in the backward only.
    assert compile_for_h100(COMPILE_FOR_H100, tmp_path) == ["True", "False"] * 2 + ["True", "True"] * 2
