"""Where along each ray to evaluate the field: stratified, inverse-CDF and box clipping."""

from __future__ import annotations

import torch
from torch import Tensor


def stratified_samples(
    n_rays: int,
    n_samples: int,
    near: float | Tensor,
    far: float | Tensor,
    randomized: bool,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Depths t: (n_rays, n_samples), one per equal bin of [near, far], sorted.

    Randomized: uniform within each bin (the seed's and NeRF's training sampling); otherwise
    each bin's centre, the randomized depths' mean, as NeRF renders test views (the centres of
    its strata). The seed notebook rendered at the bins' starts, half a bin nearer than it
    trained: the field, fitted at jittered depths, was read at depths it saw least.
    ``near``/``far`` are floats or (n_rays,) tensors.
    """
    near_t = torch.as_tensor(near, dtype=torch.float32, device=device).reshape(-1, 1)
    far_t = torch.as_tensor(far, dtype=torch.float32, device=device).reshape(-1, 1)
    bins = torch.arange(n_samples, dtype=torch.float32, device=device).expand(n_rays, n_samples)
    if randomized:
        jitter = torch.rand((n_rays, n_samples), device=device, generator=generator)
    else:
        jitter = torch.full((n_rays, n_samples), 0.5, device=device)
    return near_t + (far_t - near_t) * (bins + jitter) / n_samples


def intervals(t: Tensor, far: float | Tensor) -> tuple[Tensor, Tensor]:
    """Intervals [t_i, t_{i+1}) from sorted depths t: (n_rays, n_samples); the last ends at far.

    Returns (t_starts, t_ends), each (n_rays, n_samples).
    """
    far_t = torch.as_tensor(far, dtype=t.dtype, device=t.device).reshape(-1, 1).expand(t.shape[0], 1)
    ends = torch.cat([t[:, 1:], torch.maximum(far_t, t[:, -1:])], dim=-1)
    return t, ends


def sample_pdf(
    bins: Tensor,
    weights: Tensor,
    n_samples: int,
    randomized: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Inverse-CDF (hierarchical) sampling of a piecewise-constant density along each ray.

    bins:    (n_rays, n_bins + 1) sorted bin edges
    weights: (n_rays, n_bins) non-negative (need not sum to 1)
    returns: (n_rays, n_samples) sorted depths, denser where weights are larger;
             deterministic (evenly spaced CDF levels) when not randomized.
    """
    n_rays = weights.shape[0]
    weights = weights + 1e-5  # keep every bin reachable, avoid 0/0
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1).clamp(max=1.0)  # (n_rays, n_bins + 1)
    if randomized:
        u = torch.rand((n_rays, n_samples), device=weights.device, generator=generator)
    else:
        u = torch.linspace(0.0, 1.0, n_samples + 2, device=weights.device)[1:-1].expand(n_rays, n_samples)
    u = u.contiguous()
    above = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    below = above - 1
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    span = cdf_hi - cdf_lo
    frac = torch.where(span > 0, (u - cdf_lo) / span.clamp(min=1e-12), torch.zeros_like(u))
    samples = bin_lo + frac * (bin_hi - bin_lo)
    return torch.sort(samples, dim=-1).values


def ray_box(origins: Tensor, directions: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Entry and exit depths of rays through the cube [-bound, bound]^3 (slab method).

    origins, directions: (n_rays, 3). Returns (t_enter, t_exit), each (n_rays,);
    t_enter > t_exit for rays that miss.
    """
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    t_enter = torch.minimum(t0, t1).amax(dim=-1)
    t_exit = torch.maximum(t0, t1).amin(dim=-1)
    return t_enter, t_exit
