"""Empty-space skipping: an occupancy grid over the scene cube, and ray marching through it.

The grid keeps, per cell, an exponential moving maximum of the field's density at random
points in the cell. A cell is occupied when that density would give a sample of one march
step an opacity above ``threshold`` (or, while the field is still dim, exceeds the grid's
mean density, as in instant-NGP); occupied cells are dilated by one cell so that a cell
whose dense part the random points missed is still marched while a neighbour is occupied.
Samples are only taken in occupied cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerf.kernels import prepare, uses_triton
from nerf.rays import Rays
from nerf.sampling import ray_box


class PackedSamples(NamedTuple):
    """Samples of many rays in one flat list, sorted by ray then depth."""

    ray_indices: Tensor  # (n_samples,) int64, non-decreasing
    t_starts: Tensor  # (n_samples,)
    t_ends: Tensor  # (n_samples,)


def grid_mean(density: Tensor) -> Tensor:
    """The mean of density (r, r, r), with the same bits for any number of CPU threads.

    Summed a row at a time, then the rows: a thread sums whole rows, in one order whatever
    their number. ``density.mean()`` splits one sum between the threads, so its last bits (and
    so, rarely, which cells pass the threshold) depended on how many there were.
    """
    return density.reshape(density.shape[0], -1).sum(dim=1).sum() / density.numel()


class OccupancyGrid(nn.Module):
    """``kernel``: the march's code, ``torch`` (this module's PyTorch code everywhere),
    ``triton`` (the fused kernel of :mod:`nerf.march_kernel` on CUDA) or ``auto`` (``triton``
    on CUDA where the package is installed)."""

    def __init__(
        self, resolution: int, bound: float, threshold: float, steps_per_diagonal: int, kernel: str = "torch"
    ) -> None:
        super().__init__()
        self.resolution, self.bound, self.threshold, self.kernel = resolution, bound, threshold, kernel
        prepare(kernel, "nerf.march_kernel")
        # March step in world units and the density whose one-step opacity is the threshold.
        self.step_size = 2 * bound * math.sqrt(3) / steps_per_diagonal
        self.sigma_threshold = -math.log(1.0 - threshold) / self.step_size
        self.register_buffer("density", torch.full((resolution,) * 3, -1.0))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))

    def uses_triton(self, device: torch.device) -> bool:
        """Whether rays on ``device`` are marched by the Triton kernel."""
        return uses_triton(self.kernel, device, "model.fast.march_kernel")

    @property
    def cell_size(self) -> float:
        return 2 * self.bound / self.resolution

    def cell_index(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell index (n,) of points (n, 3), and whether each point is inside the cube."""
        unit = (points + self.bound) * (0.5 / self.bound)  # as nerf.march_kernel computes it
        inside = ((unit >= 0) & (unit < 1)).all(dim=-1)
        cell = (unit * self.resolution).long().clamp(0, self.resolution - 1)
        r = self.resolution
        return (cell[:, 0] * r + cell[:, 1]) * r + cell[:, 2], inside

    def is_occupied(self, points: Tensor) -> Tensor:
        """(n,) bool: point (n, 3) lies inside the cube in an occupied cell."""
        index, inside = self.cell_index(points)
        return inside & self.occupied.reshape(-1)[index]

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[Tensor], Tensor],
        decay: float = 0.95,
        generator: torch.Generator | None = None,
        chunk: int = 65536,
    ) -> None:
        """Evaluates ``density_fn`` (points (n, 3) -> sigma (n,)) at one random point per
        cell, folds it into the moving maximum and recomputes the occupied cells."""
        device = self.density.device
        r = self.resolution
        axis = torch.arange(r, device=device)
        cells = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        jitter = torch.rand(cells.shape, device=device, generator=generator)
        points = (cells + jitter) * self.cell_size - self.bound
        sigma = torch.cat([density_fn(points[i : i + chunk]).float() for i in range(0, len(points), chunk)])
        previous = self.density.reshape(-1)
        self.density.copy_(torch.maximum(previous * decay, sigma).reshape(r, r, r))
        # Early on, when the field is dim everywhere, the mean keeps the denser half marched
        # (a tensor, so that the GPU need not wait for the host). At the mean counts as
        # occupied: a field of one density everywhere tells nothing of where the scene is, and
        # an empty grid would take no samples, so the field would get no gradient to recover.
        threshold = grid_mean(self.density).clamp(max=self.sigma_threshold)
        occupied = (self.density >= threshold).float()[None, None]
        self.occupied.copy_(F.max_pool3d(occupied, 3, stride=1, padding=1)[0, 0] > 0)

    @torch.no_grad()
    def march(
        self,
        rays: Rays,
        near: float,
        far: float,
        randomized: bool,
        generator: torch.Generator | None = None,
    ) -> PackedSamples:
        """Equal steps of ``step_size`` (world units) along each ray within [near, far] and
        the cube, kept where the grid is occupied. Depths t are in the rays' own units."""
        origins, directions = rays
        n_rays = origins.shape[0]
        dt = self.step_size / directions.norm(dim=-1)  # (n_rays,) step in t units
        t_enter, t_exit = ray_box(origins, directions, self.bound)
        t0 = torch.clamp(t_enter, min=near)
        t1 = torch.clamp(t_exit, max=far)
        n_steps = math.ceil(2 * self.bound * math.sqrt(3) / self.step_size) + 1
        offset = (
            torch.rand(n_rays, device=origins.device, generator=generator)
            if randomized
            else torch.zeros(n_rays, device=origins.device)
        )
        if self.uses_triton(origins.device):
            from nerf.march_kernel import march_keep

            keep = march_keep(origins, directions, t0, dt, t1, offset, self.occupied, n_steps, self.bound)
        else:
            k = torch.arange(n_steps, device=origins.device, dtype=origins.dtype)
            t_starts = t0[:, None] + (k[None, :] + offset[:, None]) * dt[:, None]  # (n_rays, n_steps)
            t_ends = torch.minimum(t_starts + dt[:, None], t1[:, None])
            mid = 0.5 * (t_starts + t_ends)
            points = origins[:, None, :] + directions[:, None, :] * mid[..., None]
            keep = (t_ends > t_starts) & self.is_occupied(points.reshape(-1, 3)).reshape(n_rays, n_steps)
        ray_idx, step_idx = keep.nonzero(as_tuple=True)
        # The kept steps' depths again, by the same arithmetic, from one gather of the rays'.
        start, step, end, shift = torch.stack([t0, dt, t1, offset], dim=-1)[ray_idx].unbind(-1)
        t_starts = start + (step_idx.to(start.dtype) + shift) * step
        return PackedSamples(ray_idx, t_starts, torch.minimum(t_starts + step, end))
