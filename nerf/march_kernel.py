"""The occupancy-grid march's dense part as one Triton kernel, for CUDA
(``model.fast.march_kernel: triton``).

The PyTorch path of :meth:`nerf.occupancy.OccupancyGrid.march` evaluates, for every ray and
every one of its up to ~1,000 march steps, the step's depths, midpoint, cell and occupancy
as separate whole-tensor operations: about forty kernel launches per training step over
(rays x steps) tensors of hundreds of megabytes at full size, where the step is bound by
launches. Here one program per (ray, block of steps) computes the same values in registers
and writes only the keep mask, with the same float32 operations in the same order (fused
multiply-adds are switched off), so both paths keep the same samples.

:mod:`nerf.occupancy` imports this module (and Triton) on first use. With
``TRITON_INTERPRET=1`` set before that, the kernel runs on CPU tensors in Triton's
interpreter, which is how the CPU tests check it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_BLOCK = 128  # march steps per program


# Not specialised on the step count: one compiled variant for every march.
@triton.jit(do_not_specialize=["n_steps"])
def _keep(origins, directions, t0, dt, t1, offset, occupied, keep, n_steps, bound, scale, res,
          BLOCK: tl.constexpr):
    """keep[ray, k] = march step k of ``ray`` is a non-empty interval whose midpoint lies in
    the cube, in an occupied cell."""
    ray = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = k < n_steps
    start, step, end = tl.load(t0 + ray), tl.load(dt + ray), tl.load(t1 + ray)
    t_start = start + (k.to(tl.float32) + tl.load(offset + ray)) * step
    t_end = tl.minimum(t_start + step, end)
    mid = 0.5 * (t_start + t_end)
    # Unit-cube coordinates of the midpoint, per axis as OccupancyGrid.cell_index computes them.
    ux = (tl.load(origins + ray * 3 + 0) + tl.load(directions + ray * 3 + 0) * mid + bound) * scale
    uy = (tl.load(origins + ray * 3 + 1) + tl.load(directions + ray * 3 + 1) * mid + bound) * scale
    uz = (tl.load(origins + ray * 3 + 2) + tl.load(directions + ray * 3 + 2) * mid + bound) * scale
    inside = (ux >= 0) & (ux < 1) & (uy >= 0) & (uy < 1) & (uz >= 0) & (uz < 1)
    cx = tl.minimum(tl.maximum((ux * res).to(tl.int32), 0), res - 1)
    cy = tl.minimum(tl.maximum((uy * res).to(tl.int32), 0), res - 1)
    cz = tl.minimum(tl.maximum((uz * res).to(tl.int32), 0), res - 1)
    wanted = live & inside & (t_end > t_start)
    occupied_cell = tl.load(occupied + (cx * res + cy) * res + cz, mask=wanted, other=0)
    tl.store(keep + ray * n_steps + k, (wanted & (occupied_cell != 0)).to(tl.int8), mask=live)


@torch.compiler.disable  # a graph break: the kernel is already fused
def march_keep(origins: Tensor, directions: Tensor, t0: Tensor, dt: Tensor, t1: Tensor, offset: Tensor,
               occupied: Tensor, n_steps: int, bound: float) -> Tensor:
    """Which of ``n_steps`` march steps per ray to keep: (n_rays, n_steps) bool.

    origins, directions: (n_rays, 3); t0, dt, t1, offset: (n_rays,) float32, step k spanning
    [t0 + (k + offset) dt, min(that + dt, t1)); occupied: (r, r, r) bool over the cube
    [-bound, bound]^3, indexed (x, y, z).
    """
    n_rays, res = origins.shape[0], occupied.shape[0]
    keep = torch.empty((n_rays, n_steps), dtype=torch.int8, device=origins.device)
    if n_rays > 0 and n_steps > 0:
        _keep[(n_rays, triton.cdiv(n_steps, _BLOCK))](
            origins.float().contiguous(), directions.float().contiguous(), t0.contiguous(), dt.contiguous(),
            t1.contiguous(), offset.contiguous(), occupied.contiguous().view(torch.int8), keep, n_steps,
            bound, 0.5 / bound, res, BLOCK=_BLOCK, enable_fp_fusion=False,
        )
    return keep.view(torch.bool)
