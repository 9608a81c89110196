"""Encodings: Fourier layout, spherical-harmonic orthonormality, and the hash grid against a
direct per-point implementation and exact trilinear interpolation (grid_sample)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nerf.encoding import (
    HashGrid,
    SphericalHarmonics,
    _table_gradient,
    fourier_dim,
    fourier_encode,
    interpolate_rows,
)

# --------------------------------------------------------------------------- Fourier


def test_fourier_hand_case_layout_and_scale() -> None:
    x = torch.tensor([[0.5, -1.0]])
    out = fourier_encode(x, 2, scale=math.pi)
    # [x, sin(pi x), cos(pi x), sin(2 pi x), cos(2 pi x)], each block 2 wide.
    expected = [0.5, -1.0, 1.0, 0.0, 0.0, -1.0, 0.0, 0.0, -1.0, 1.0]
    assert out.shape == (1, fourier_dim(2, 2)) == (1, 10)
    assert out[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_fourier_dimension_default_scale_and_leading_dims() -> None:
    x = torch.rand(4, 5, 3)
    out = fourier_encode(x, 3)
    assert out.shape == (4, 5, 3 * 7) and fourier_dim(3, 3) == 21
    assert torch.equal(out[..., :3], x)
    for k in range(3):  # scale 1: frequencies 1, 2, 4
        assert torch.allclose(out[..., 3 + 6 * k : 6 + 6 * k], torch.sin(2.0**k * x))
        assert torch.allclose(out[..., 6 + 6 * k : 9 + 6 * k], torch.cos(2.0**k * x))
    assert torch.equal(fourier_encode(x, 0), x)
    assert fourier_dim(3, 0) == 3


# --------------------------------------------------------------------------- spherical harmonics


def _unit_vectors(n: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_spherical_harmonics_degree_gives_degree_squared_outputs(degree: int) -> None:
    assert SphericalHarmonics(degree)(_unit_vectors(5, 0)).shape == (5, degree**2)


def test_spherical_harmonics_are_orthonormal_on_the_sphere() -> None:
    n = 400_000
    y = SphericalHarmonics(4)(_unit_vectors(n, 1))  # (n, 16)
    # Entries of 4 pi Y Y^T averaged over the samples, and their second moments.
    gram = 4 * math.pi * (y.T @ y) / n
    second = (4 * math.pi) ** 2 * ((y * y).T @ (y * y)) / n
    # Each entry's Monte Carlo standard error, measured from the same samples: at most ~0.002
    # (4 pi Y_i Y_j has sd <= ~1.4 over the sphere, / sqrt(4e5)); the worst of the 256 entries
    # sits at ~3 se, so 6 se bounds the sampling noise. A wrong constant is far outside it:
    # a 5% slip in one coefficient moves its diagonal entry by ~0.1 (~50 se).
    se = (second - gram**2).clamp(min=0).sqrt() / math.sqrt(n)
    assert float(se.max()) < 0.005
    # (+ 1e-6: float32 coefficients, seen in the noise-free entry of the constant Y_0)
    assert torch.all((gram - torch.eye(16, dtype=gram.dtype)).abs() <= 6 * se + 1e-6)


def _sh_term_by_term(d: torch.Tensor) -> torch.Tensor:
    """The 16 real spherical harmonics written out as instant-NGP's encoder (tiny-cuda-nn)
    writes them."""
    x, y, z = d.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
        0.94617469575755997 * zz - 0.31539156525251999,
        -1.0925484305920792 * x * z, 0.54627421529603959 * (xx - yy),
        0.59004358992664352 * y * (-3 * xx + yy), 2.8906114426405538 * x * y * z,
        0.45704579946446572 * y * (1 - 5 * zz), 0.3731763325901154 * z * (5 * zz - 3),
        0.45704579946446572 * x * (1 - 5 * zz), 1.4453057213202769 * z * (xx - yy),
        0.59004358992664352 * x * (-xx + 3 * yy),
    ], dim=-1)


def test_spherical_harmonics_equal_instant_ngps_but_for_the_sign_of_outputs_9_and_15() -> None:
    d = _unit_vectors(10_000, 2).float()
    # In float64: within 1e-6 is float32 rounding. The sign of m = -3 and +3 differs (nerf.encoding).
    reference = _sh_term_by_term(d.double())
    reference[:, [9, 15]] *= -1
    for degree in (1, 2, 3, 4):
        sh = SphericalHarmonics(degree)
        assert sh.out_dim == degree**2
        assert torch.allclose(sh(d).double(), reference[:, : degree**2], rtol=0, atol=1e-6)


def test_spherical_harmonics_reject_a_degree_outside_1_to_4() -> None:
    with pytest.raises(ValueError, match="1..4"):
        SphericalHarmonics(5)


def test_spherical_harmonics_values_on_the_z_axis() -> None:
    y = SphericalHarmonics(4)(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    # Only m = 0 terms survive: sqrt((2l + 1) / (4 pi)) for l = 0..3.
    expected = torch.zeros(16, dtype=torch.float64)
    for band, index in zip(range(4), [0, 2, 6, 12]):
        expected[index] = math.sqrt((2 * band + 1) / (4 * math.pi))
    assert torch.allclose(y, expected, atol=1e-7)


# --------------------------------------------------------------------------- hash grid

BOUND = 1.5
RESOLUTIONS = [4, 8, 16, 32]  # base 4, max 32, 4 levels: growth 2
TABLE = 2**10  # (4+1)^3 = 125 and (8+1)^3 = 729 fit (dense); 17^3 and 33^3 are hashed
PRIMES = (1, 2654435761, 805459861)


def make_grid() -> HashGrid:
    torch.manual_seed(0)
    grid = HashGrid(levels=4, features_per_level=2, log2_table_size=10, base_resolution=4,
                    max_resolution=32, bound=BOUND)
    with torch.no_grad():  # values of order 1, so that interpolation errors would show
        grid.table.copy_(torch.randn(grid.table.shape, generator=torch.Generator().manual_seed(1)))
    return grid


def sample_points() -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    interior = (torch.rand(12, 3, generator=gen) * 2 - 1) * BOUND
    special = torch.tensor([
        [-BOUND, -BOUND, -BOUND],  # first vertex
        [BOUND, BOUND, BOUND],  # last vertex (lower clamped to N - 1, frac 1)
        [2.0, -3.0, 0.1],  # outside: clamped onto the cube
        [0.0, 0.0, 0.0],  # a vertex of every level
        [0.3, -1.2, 1.49],
    ])
    return torch.cat([interior, special])


def reference_encoding(table: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point, per level, per corner, in plain Python: features (n, 4 * 2) and, for the
    loss sum(features), d loss / d table (the sum of the corner weights that use each row)."""
    table64 = table.detach().double()
    grad = torch.zeros_like(table64)
    sizes = [min((r + 1) ** 3, TABLE) for r in RESOLUTIONS]
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    assert sum(sizes) == table.shape[0]
    out = torch.zeros(points.shape[0], 8, dtype=torch.float64)
    for p, point in enumerate(points.double()):
        for level, n_cells in enumerate(RESOLUTIONS):
            unit = ((point + BOUND) / (2 * BOUND)).clamp(0, 1)
            scaled = unit * n_cells
            lower = [min(math.floor(float(s)), n_cells - 1) for s in scaled]
            frac = [float(scaled[k]) - lower[k] for k in range(3)]
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        x, y, z = lower[0] + dx, lower[1] + dy, lower[2] + dz
                        if (n_cells + 1) ** 3 <= TABLE:
                            index = x + y * (n_cells + 1) + z * (n_cells + 1) ** 2
                        else:
                            index = (x * PRIMES[0] ^ y * PRIMES[1] ^ z * PRIMES[2]) % TABLE
                        weight = 1.0
                        for k, d in enumerate((dx, dy, dz)):
                            weight *= frac[k] if d else 1 - frac[k]
                        row = offsets[level] + index
                        out[p, 2 * level : 2 * level + 2] += weight * table64[row]
                        grad[row] += weight
    return out, grad


def test_hash_grid_levels_and_table_layout() -> None:
    grid = make_grid()
    assert grid.resolutions.tolist() == RESOLUTIONS
    assert grid.dense.tolist() == [True, True, False, False]
    assert grid.table.shape == (125 + 729 + TABLE + TABLE, 2)
    assert grid.out_dim == 8


@pytest.mark.parametrize(("levels", "base", "finest"), [(16, 16, 2048), (16, 16, 4096), (8, 16, 128),
                                                      (12, 4, 1000), (2, 8, 8)])
def test_hash_grid_levels_run_from_base_to_max_resolution(levels: int, base: int, finest: int) -> None:
    # Geometric growth in floating point lands a hair below whole numbers (16 * 2^(8/15 * 15)
    # is 4095.99...): the finest level must still be the requested resolution.
    grid = HashGrid(levels=levels, log2_table_size=4, base_resolution=base, max_resolution=finest)
    resolutions = grid.resolutions.tolist()
    assert resolutions[0] == base and resolutions[-1] == finest
    assert resolutions == sorted(resolutions)


def test_hash_grid_levels_between_round_their_resolution_down() -> None:
    # Growth sqrt(2.5) from 10 to 25: the middle level has floor(15.81...) = 15 cells, as in instant-NGP.
    grid = HashGrid(levels=3, log2_table_size=4, base_resolution=10, max_resolution=25)
    assert grid.resolutions.tolist() == [10, 15, 25]


def test_a_level_whose_vertices_just_fill_the_table_is_dense() -> None:
    # 2^9 rows: 7 cells have 8^3 = 512 vertices (dense, exact), 8 cells 9^3 = 729 (hashed).
    grid = HashGrid(levels=2, log2_table_size=9, base_resolution=7, max_resolution=8)
    assert grid.resolutions.tolist() == [7, 8] and grid.dense.tolist() == [True, False]
    assert grid.table.shape[0] == 512 + 512


def test_hash_grid_table_starts_small_and_centred_on_zero() -> None:
    # instant-NGP's initialisation: uniform in [-1e-4, 1e-4].
    table = HashGrid(levels=2, log2_table_size=10, base_resolution=4, max_resolution=32).table.detach()
    assert table.abs().max() <= 1e-4
    assert table.mean().abs() < 1e-5 and (table < 0).float().mean() == pytest.approx(0.5, abs=0.05)


def test_hash_grid_matches_direct_per_point_implementation() -> None:
    grid = make_grid()
    points = sample_points()
    expected, _ = reference_encoding(grid.table, points)
    got = grid(points)
    assert got.shape == (points.shape[0], 8)
    # float32 module vs float64 reference on order-1 values: round-off ~1e-6.
    assert torch.allclose(got.double(), expected, atol=2e-5)


def test_hash_grid_dense_levels_are_exact_trilinear_interpolation() -> None:
    grid = make_grid()
    points = sample_points()[:-3]  # inside the cube (grid_sample does not clamp the same way)
    got = grid(points)
    start = 0
    for level, n_cells in enumerate(RESOLUTIONS[:2]):
        size = (n_cells + 1) ** 3
        # Row x + y (N+1) + z (N+1)^2: x is fastest, so the (N+1)^3 block reshapes to
        # [z, y, x, F]; grid_sample reads a (1, F, D=z, H=y, W=x) volume at (x, y, z) in [-1, 1].
        volume = grid.table[start : start + size].detach().reshape(n_cells + 1, n_cells + 1, n_cells + 1, 2)
        volume = volume.permute(3, 0, 1, 2)[None]
        coords = (points / BOUND).reshape(1, -1, 1, 1, 3)
        sampled = F.grid_sample(volume, coords, mode="bilinear", align_corners=True)  # (1, F, n, 1, 1)
        expected = sampled[0, :, :, 0, 0].T
        assert torch.allclose(got[:, 2 * level : 2 * level + 2], expected, atol=1e-5)
        start += size


def test_hash_grid_gradients_reach_only_the_rows_used() -> None:
    grid = make_grid()
    points = sample_points()
    grid(points).sum().backward()
    _, expected = reference_encoding(grid.table, points)
    grad = grid.table.grad
    assert grad is not None
    # d sum / d row = the total corner weight on that row, for both features.
    assert torch.allclose(grad.double(), expected, atol=1e-5)
    used = expected[:, 0] > 0
    assert torch.all(grad[~used] == 0)
    assert torch.all(grad[used] != 0)
    assert 0 < int(used.sum()) < grad.shape[0]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_interpolate_rows_matches_indexing_and_autograd(dtype) -> None:
    torch.manual_seed(0)
    table = torch.randn(50, 2, requires_grad=True)
    rows = torch.randint(0, 50, (400, 8)).to(dtype)  # many rows repeat
    weights = torch.rand(400, 8, requires_grad=True)
    upstream = torch.randn(400, 2)
    got = interpolate_rows(table, rows, weights)
    (got * upstream).sum().backward()
    mine = table.grad, weights.grad
    table.grad = weights.grad = None
    want = (weights[..., None] * table[rows.long()]).sum(dim=1)
    (want * upstream).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mine[0], table.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mine[1], weights.grad, rtol=1e-6, atol=1e-6)


def test_table_gradient_on_the_cpu_is_index_add_bit_for_bit() -> None:
    # The CPU's bincount route adds the same float32 terms in the same order as index_add_.
    gen = torch.Generator().manual_seed(1)
    table = torch.zeros(1000, 2)
    rows = torch.randint(0, 900, (5000, 8), generator=gen, dtype=torch.int32)  # rows 900.. unused
    weights = torch.rand(5000, 8, generator=gen)
    grad = torch.randn(5000, 2, generator=gen) * torch.logspace(-6, 6, 5000)[:, None]  # rounding matters
    got = _table_gradient(table, rows, weights, grad)
    per_row = (weights[..., None] * grad[:, None, :]).reshape(-1, 2)
    want = torch.zeros_like(table).index_add_(0, rows.reshape(-1).long(), per_row)
    assert got.shape == (1000, 2) and got.dtype == torch.float32
    assert torch.equal(got, want) and torch.count_nonzero(got[900:]) == 0
    # Summed in float64 instead, the rows would differ: the test can tell.
    assert not torch.equal(got, torch.zeros(1000, 2, dtype=torch.float64).index_add_(
        0, rows.reshape(-1).long(), per_row.double()).float())


def test_interpolate_rows_gradients_pass_gradcheck() -> None:
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    rows = torch.randint(0, 6, (5, 4), generator=gen)
    weights = torch.rand(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, w: interpolate_rows(t, rows, w), (table, weights))


def test_a_hash_grid_of_no_points_gives_no_features() -> None:
    grid = make_grid()
    features = grid(torch.empty(0, 3))
    features.sum().backward()
    assert features.shape == (0, 8) and torch.count_nonzero(grid.table.grad) == 0


def test_a_dense_finest_level_encodes_the_cube_s_upper_faces() -> None:
    # Every level dense: a point at +bound lies on the last vertex of the finest level, which
    # is its last row; its cell is the last one (lower = N - 1, frac 1), not one beyond.
    grid = HashGrid(levels=2, features_per_level=2, log2_table_size=10, base_resolution=2,
                    max_resolution=4, bound=BOUND)
    assert grid.dense.tolist() == [True, True]
    with torch.no_grad():
        grid.table.copy_(torch.randn(grid.table.shape, generator=torch.Generator().manual_seed(4)))
    corner = torch.tensor([[BOUND, BOUND, BOUND], [BOUND, 0.1, -0.3], [0.2, BOUND, BOUND]],
                          requires_grad=True)
    features = grid(corner)
    start = 0
    for level, n_cells in enumerate((2, 4)):
        size = (n_cells + 1) ** 3
        volume = grid.table[start : start + size].detach().reshape(n_cells + 1, n_cells + 1, n_cells + 1, 2)
        coords = (corner.detach() / BOUND).reshape(1, -1, 1, 1, 3)
        sampled = F.grid_sample(volume.permute(3, 0, 1, 2)[None], coords, align_corners=True)
        expected = sampled[0, :, :, 0, 0].T
        assert torch.allclose(features[:, 2 * level : 2 * level + 2], expected, atol=1e-5)
        start += size
    # On the face, the gradient with respect to the point is the last cell's slope: the
    # difference quotient from just inside.
    (grad,) = torch.autograd.grad(features.sum(), corner)
    step = 1e-3
    for axis in range(3):
        for p, on_face in enumerate(corner.detach()[:, axis] == BOUND):
            if on_face:
                moved = corner.detach()[p].clone()
                moved[axis] -= step
                with torch.no_grad():
                    quotient = (grid(corner.detach()[p : p + 1]).sum() - grid(moved[None]).sum()) / step
                assert float(grad[p, axis]) == pytest.approx(float(quotient), rel=1e-3, abs=1e-3)
