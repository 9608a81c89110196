"""Occupancy grid on a field of known geometry, and marching rays through it."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cpu_threads

from nerf.occupancy import OccupancyGrid, grid_mean
from nerf.rays import Rays

BOUND = 1.0
# Off-centre, so that a mix-up of the grid's axes would move the occupied cells.
CENTRE = torch.tensor([0.3, -0.2, 0.1])
RADIUS = 0.45


def sphere_density(points: torch.Tensor) -> torch.Tensor:
    """1000 inside the sphere, 0 outside."""
    return ((points - CENTRE).norm(dim=-1) < RADIUS).float() * 1000.0


def random_points_in_sphere(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=gen)
    v = v / v.norm(dim=-1, keepdim=True)
    r = RADIUS * torch.rand(n, 1, generator=gen) ** (1 / 3) * 0.99999
    return CENTRE + r * v


@pytest.fixture
def grid() -> OccupancyGrid:
    grid = OccupancyGrid(resolution=16, bound=BOUND, threshold=0.01, steps_per_diagonal=64)
    grid.update(sphere_density, generator=torch.Generator().manual_seed(0))
    return grid


def test_a_faint_region_beside_a_dense_one_is_kept(grid) -> None:
    # The guarantee, on a field whose mean (~48, from the dense sphere) is far above
    # the threshold: a slab just twice as dense as the threshold must still be marched.
    faint = 2 * grid.sigma_threshold

    def density(points: torch.Tensor) -> torch.Tensor:
        return sphere_density(points) + (points[:, 0] < -0.6).float() * faint

    grid.update(density, generator=torch.Generator().manual_seed(1))
    assert float(grid_mean(grid.density)) > 100 * grid.sigma_threshold
    unit = torch.rand(5000, 3, generator=torch.Generator().manual_seed(2))
    slab = unit * torch.tensor([0.399, 2.0, 2.0]) - 1  # x in [-1, -0.6), y and z in [-1, 1)
    assert torch.all(density(slab) > grid.sigma_threshold)
    assert grid.is_occupied(slab).all()
    # Empty space (x > 0.6, away from the sphere) stays skipped.
    assert not grid.is_occupied(torch.tensor([[0.95, 0.95, 0.95], [0.95, -0.95, -0.95]])).any()


def test_new_grid_is_all_occupied() -> None:
    grid = OccupancyGrid(resolution=4, bound=BOUND, threshold=0.01, steps_per_diagonal=16)
    assert grid.occupied.all()
    assert grid.step_size == pytest.approx(2 * math.sqrt(3) / 16)
    assert grid.sigma_threshold == pytest.approx(-math.log(0.99) / grid.step_size)


def test_cell_index_is_x_major() -> None:
    grid = OccupancyGrid(resolution=4, bound=BOUND, threshold=0.01, steps_per_diagonal=16)
    grid.occupied.zero_()
    grid.occupied[1, 2, 3] = True  # x cell 1, y cell 2, z cell 3
    centre = (torch.tensor([[1, 2, 3], [3, 2, 1]]) + 0.5) * grid.cell_size - BOUND
    assert grid.is_occupied(centre).tolist() == [True, False]
    index, inside = grid.cell_index(centre)
    assert index.tolist() == [(1 * 4 + 2) * 4 + 3, (3 * 4 + 2) * 4 + 1]
    assert inside.all()
    # Outside the cube is never occupied, even when the clamped cell is.
    grid.occupied.fill_(True)
    outside = torch.tensor([[1.5, 0.0, 0.0], [0.0, -1.01, 0.0], [0.0, 0.0, 1.0]])
    assert grid.is_occupied(outside).tolist() == [False, False, False]


def test_update_marks_every_dense_point_and_leaves_far_cells_empty(grid) -> None:
    inside = random_points_in_sphere(5000, seed=1)
    assert torch.all(sphere_density(inside) > grid.sigma_threshold)
    assert grid.is_occupied(inside).all()
    # The cube's corners are far from the sphere: empty.
    signs = (-0.95, 0.95)
    corners = torch.tensor([[sx, sy, sz] for sx in signs for sy in signs for sz in signs])
    assert not grid.is_occupied(corners).any()
    # Only the sphere's cells and a one-cell (dilation) margin are occupied: every occupied
    # cell's centre lies within radius + 1.5 cell diagonals of the sphere's centre.
    r = grid.resolution
    axis = torch.arange(r)
    cells = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    centres = (cells + 0.5) * grid.cell_size - BOUND
    occupied = grid.occupied.reshape(-1)
    distance = (centres[occupied] - CENTRE).norm(dim=-1)
    assert distance.max() < RADIUS + 1.5 * math.sqrt(3) * grid.cell_size
    assert occupied.float().mean() < 0.2


def test_update_keeps_a_decaying_maximum() -> None:
    grid = OccupancyGrid(resolution=4, bound=BOUND, threshold=0.01, steps_per_diagonal=16)
    grid.update(lambda p: torch.full((p.shape[0],), 10.0))
    assert torch.all(grid.density == 10.0)
    grid.update(lambda p: torch.zeros(p.shape[0]), decay=0.5)
    assert torch.all(grid.density == 5.0)
    assert grid.occupied.all()  # 5 is above the threshold (~0.047)
    # A field of one dim density everywhere (5 / 2^12, below the threshold) rules out no
    # cell: all stay marched, so that training can still teach the field where the scene is.
    for _ in range(12):
        grid.update(lambda p: torch.zeros(p.shape[0]), decay=0.5)
    assert grid.occupied.all()
    # Once one corner is denser, the dim rest (below the threshold and the mean) is skipped.
    grid.update(lambda p: (p < -BOUND / 2).all(dim=-1).float() * 0.01)
    assert grid.occupied[:2, :2, :2].all() and not grid.occupied[3, 3, 3]


def test_update_finds_density_anywhere_in_a_cell_not_only_at_one_point() -> None:
    # A slab x in (0.1, 0.2), inside the cells x in [0, 0.5): neither their corners nor their
    # centres; points drawn anywhere in each cell find it within a few updates.
    grid = OccupancyGrid(resolution=4, bound=BOUND, threshold=0.01, steps_per_diagonal=16)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        grid.update(lambda p: ((p[:, 0] > 0.1) & (p[:, 0] < 0.2)).float() * 1000.0, generator=gen)
    assert grid.occupied[2].all()
    assert not grid.occupied[0].any()  # two cells away from the slab: skipped


def test_update_draws_its_points_from_the_generator() -> None:
    grids = [OccupancyGrid(resolution=4, bound=BOUND, threshold=0.01, steps_per_diagonal=16),
             OccupancyGrid(resolution=4, bound=BOUND, threshold=0.01, steps_per_diagonal=16)]
    for grid in grids:
        grid.update(lambda p: p[:, 0] + 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(grids[0].density, grids[1].density)


def test_update_decays_by_instant_ngps_095_by_default() -> None:
    grid = OccupancyGrid(resolution=4, bound=BOUND, threshold=0.01, steps_per_diagonal=16)
    grid.update(lambda p: torch.full((p.shape[0],), 10.0))
    grid.update(lambda p: torch.zeros(p.shape[0]))
    assert torch.allclose(grid.density, torch.tensor(9.5))


def _check_packed(grid, rays, samples, near, far) -> None:
    idx, t0, t1 = samples
    assert idx.dtype == torch.int64
    assert torch.all(idx[1:] >= idx[:-1])  # sorted by ray
    same = idx[1:] == idx[:-1]
    assert torch.all(t0[1:][same] > t0[:-1][same])  # then by depth
    assert torch.all(t1[:-1][same] <= t0[1:][same] + 1e-6)  # intervals do not overlap
    assert torch.all(t1 > t0)
    dt = grid.step_size / rays.directions.norm(dim=-1)[idx]
    assert torch.all(t1 - t0 <= dt + 1e-6)
    assert torch.all(t0 >= near - 1e-6) and torch.all(t1 <= far + 1e-6)
    o, d = rays.origins[idx], rays.directions[idx]
    for t in (t0, t1):
        assert torch.all((o + d * t[:, None]).abs() <= BOUND + 1e-5)  # within the cube
    mid = o + d * (0.5 * (t0 + t1))[:, None]
    assert grid.is_occupied(mid).all()


def camera_rays() -> Rays:
    """Rays from (0, 0, 3) fanning towards the cube (not unit length), plus two that miss."""
    gen = torch.Generator().manual_seed(4)
    xy = (torch.rand(40, 2, generator=gen) * 2 - 1) * 0.3
    directions = torch.cat([xy, -torch.ones(40, 1)], dim=-1) * 1.7
    directions = torch.cat([directions, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, -0.1]])])
    origins = torch.tensor([0.0, 0.0, 3.0]).expand(42, 3)
    return Rays(origins, directions)


@pytest.mark.parametrize("randomized", [False, True])
def test_march_samples_sorted_in_occupied_cells_within_range(grid, randomized) -> None:
    rays = camera_rays()
    near, far = 1.0, 10.0
    samples = grid.march(rays, near, far, randomized, generator=torch.Generator().manual_seed(5))
    assert samples.ray_indices.numel() > 0
    _check_packed(grid, rays, samples, near, far)
    # The last two rays miss the cube (one points away, one passes beside it): no samples.
    assert not torch.isin(torch.tensor([40, 41]), samples.ray_indices).any()


def test_march_covers_the_sphere_without_gaps(grid) -> None:
    # Down the z axis through the sphere's centre: every depth inside the sphere is covered.
    rays = Rays(torch.tensor([[0.3, -0.2, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    _, t0, t1 = grid.march(rays, 0.0, 100.0, randomized=False)
    ts = torch.linspace(2.9 - RADIUS + 1e-3, 2.9 + RADIUS - 1e-3, 200)
    covered = ((ts[:, None] >= t0[None]) & (ts[:, None] <= t1[None])).any(dim=1)
    assert covered.all()
    # And nothing far from it: no sample beyond one dilated cell of the sphere.
    assert t0.min() > 2.9 - RADIUS - 2 * grid.cell_size
    assert t1.max() < 2.9 + RADIUS + 2 * grid.cell_size


def test_march_clips_to_near_far() -> None:
    grid = OccupancyGrid(resolution=8, bound=BOUND, threshold=0.01, steps_per_diagonal=64)  # all occupied
    rays = Rays(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    _, t0, t1 = grid.march(rays, 2.8, 3.3, randomized=False)
    assert t0[0] == pytest.approx(2.8) and t1[-1] == pytest.approx(3.3)
    # Contiguous steps of step_size cover [near, far] exactly.
    assert torch.allclose(t1[:-1], t0[1:])
    assert float((t1 - t0).sum()) == pytest.approx(0.5, abs=1e-5)
    # Without near/far limits the cube does the clipping: [2, 4].
    _, t0, t1 = grid.march(rays, 0.0, 100.0, randomized=False)
    assert t0[0] == pytest.approx(2.0) and t1[-1] == pytest.approx(4.0)
    assert float((t1 - t0).sum()) == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("randomized", [False, True])
def test_march_covers_the_cube_s_whole_diagonal(randomized) -> None:
    # The longest chord: t in [0.5, 2.5] from (-1.5, -1.5, -1.5) along (1, 1, 1).
    grid = OccupancyGrid(resolution=8, bound=BOUND, threshold=0.01, steps_per_diagonal=16)  # all occupied
    rays = Rays(torch.full((1, 3), -1.5), torch.ones(1, 3))
    _, t0, t1 = grid.march(rays, 0.0, 100.0, randomized, generator=torch.Generator().manual_seed(6))
    assert t1[-1] == pytest.approx(2.5) and torch.allclose(t1[:-1], t0[1:])
    assert t0[0] >= 0.5 - 1e-6 and t0[0] < 0.5 + 2 / 16 + 1e-6


def test_march_randomized_is_seeded() -> None:
    grid = OccupancyGrid(resolution=8, bound=BOUND, threshold=0.01, steps_per_diagonal=64)
    rays = camera_rays()
    a = grid.march(rays, 1.0, 10.0, True, torch.Generator().manual_seed(1))
    b = grid.march(rays, 1.0, 10.0, True, torch.Generator().manual_seed(1))
    c = grid.march(rays, 1.0, 10.0, True, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.t_starts.shape != c.t_starts.shape or not torch.equal(a.t_starts, c.t_starts)


def test_grid_mean_has_the_same_bits_with_any_cpu_thread_count() -> None:
    """The update's threshold: density.mean() splits its sum between threads (the control),
    grid_mean sums whole rows per thread."""
    gen = torch.Generator().manual_seed(0)
    grids = [torch.rand(64, 64, 64, generator=gen) ** 8 * 100 for _ in range(4)]
    results = {}
    for threads in (1, 2, 3):
        with cpu_threads(threads):
            results[threads] = [(grid.mean(), grid_mean(grid)) for grid in grids]
    assert all(torch.equal(ours, results[1][i][1]) for t in (2, 3) for i, (_, ours) in enumerate(results[t]))
    assert any(not torch.equal(plain, results[1][i][0])
               for t in (2, 3) for i, (plain, _) in enumerate(results[t]))
    assert torch.allclose(grid_mean(grids[0]), grids[0].double().mean().float(), rtol=1e-6)
